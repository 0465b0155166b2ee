"""Class 2, inputs: one opener for every input (data/opener.py). Regular files only, bounded lines, documents and
decompression, every field size, any file name, and a bounded standard-input spool that goes when the run does."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zlib

import pytest
from hostile_tools import one_line, run_cli, snapshot

from lookalike.data import read_corpus
from lookalike.errors import InputError


def _gz_of_one_line(path, n_bytes: int, prefix: bytes = b"", suffix: bytes = b"\n") -> None:
    """A gzip file whose content is prefix + n_bytes of 'a' + suffix, written in bounded memory."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"a" * (1 << 20)
    with open(path, "wb") as fh:
        fh.write(comp.compress(prefix))
        for _ in range(n_bytes >> 20):
            fh.write(comp.compress(block))
        fh.write(comp.compress(suffix))
        fh.write(comp.flush())


def test_a_fifo_corpus_is_refused_without_blocking(tiny_exports, tmp_path):
    fifo = tmp_path / "corpus.txt"
    os.mkfifo(fifo)
    r = run_cli("embed", tiny_exports["bert2"], fifo, tmp_path / "out", timeout=60)
    one_line(r, "corpus.txt", "FIFO", "standard input")
    assert not (tmp_path / "out").exists()  # nothing left behind, no lock held


def test_a_fifo_anywhere_lookalike_reads_is_refused_without_blocking(small_store, small_knn, corpus_file, tmp_path):
    """Not only corpora: neighbour files (h5py's open would block on a FIFO forever), experiment files, error
    sets, OOD files, predictions, store shards. The stdin hint is for corpora only."""
    for name in ("n.h5", "exp.yaml", "errors.json", "ood.json", "pred.json"):
        os.mkfifo(tmp_path / name)
    cases = [(("agree", "--knn", f"a={tmp_path / 'n.h5'}", "--knn", f"b={small_knn}"), "n.h5"),
             (("run", tmp_path / "exp.yaml"), "exp.yaml"),
             (("agree", "--errors", f"a={tmp_path / 'errors.json'}", "--errors", f"b={tmp_path / 'errors.json'}"),
              "errors.json"),
             (("agree", "--ood", f"a={tmp_path / 'ood.json'}", "--ood", f"b={tmp_path / 'ood.json'}"), "ood.json"),
             (("evaluate", corpus_file, tmp_path / "pred.json", "--task", "cls"), "pred.json")]
    for args, name in cases:
        line = one_line(run_cli(*args, timeout=60), name)
        assert "FIFO" in line or "not a regular file" in line, line
        assert "standard input" not in line, line  # the pipe-to-stdin hint is for corpora
    # a store whose shard was swapped for a FIFO: refused, never opened
    import shutil

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    shard = sorted(store.glob("part-*.h5"))[0]
    shard.unlink()
    os.mkfifo(shard)
    one_line(run_cli("knn", store, tmp_path / "k.h5", timeout=60), shard.name)


def test_process_substitution_says_to_pipe_to_stdin(tiny_exports, tmp_path):
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"one text\n")
        r = run_cli("embed", tiny_exports["bert2"], f"/dev/fd/{read_fd}", tmp_path / "out", pass_fds=(read_fd,),
                    timeout=60)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    one_line(r, "FIFO", "standard input (`-`)")


def test_a_device_as_corpus_or_inside_a_corpus_folder_is_refused(tiny_exports, tmp_path):
    one_line(run_cli("embed", tiny_exports["bert2"], "/dev/zero", tmp_path / "o1", "--format", "text", timeout=60,
                     mem_mb=1024), "/dev/zero", "character device")
    imdb = tmp_path / "aclImdb" / "test"
    (imdb / "pos").mkdir(parents=True)
    (imdb / "neg").mkdir()
    (imdb / "pos" / "0_9.txt").write_text("a fine film")
    os.symlink("/dev/zero", imdb / "neg" / "1_1.txt")
    r = run_cli("embed", tiny_exports["bert2"], tmp_path / "aclImdb", tmp_path / "o2", timeout=60, mem_mb=1024)
    one_line(r, "1_1.txt", "character device")
    assert r.max_rss_mb < 900


def test_a_socket_in_a_corpus_folder_is_refused(tiny_exports, tmp_path):
    imdb = tmp_path / "aclImdb"
    (imdb / "pos").mkdir(parents=True)
    (imdb / "pos" / "0_9.txt").write_text("a fine film")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(imdb / "pos" / "sock"))
    try:
        one_line(run_cli("embed", tiny_exports["bert2"], imdb, tmp_path / "out", timeout=60), "sock", "socket")
    finally:
        s.close()


def test_a_gzip_bomb_of_one_line_is_refused_in_bounded_memory(tiny_exports, tmp_path):
    bomb = tmp_path / "bomb.txt.gz"
    _gz_of_one_line(bomb, 300 << 20)
    assert bomb.stat().st_size < 1 << 20
    r = run_cli("embed", tiny_exports["bert2"], bomb, tmp_path / "out", mem_mb=1024, timeout=120)
    one_line(r, "bomb.txt.gz", "compression bomb")
    assert r.max_rss_mb < 700, r.max_rss_mb


def test_a_json_gzip_bomb_is_refused_in_bounded_memory(tiny_exports, tmp_path):
    bomb = tmp_path / "bomb.json.gz"
    _gz_of_one_line(bomb, 300 << 20, prefix=b'{"data": [{"title": "', suffix=b'", "paragraphs": []}]}')
    r = run_cli("embed", tiny_exports["bert2"], bomb, tmp_path / "out", mem_mb=1024, timeout=120)
    one_line(r, "bomb.json.gz", "compression bomb")
    assert r.max_rss_mb < 700, r.max_rss_mb


def test_a_line_over_the_record_limit_is_one_line_naming_it(tiny_exports, tmp_path):
    p = tmp_path / "big.txt"
    p.write_bytes(b"short\n" + b"word " * (500 << 10) + b"\n")
    r = run_cli("embed", tiny_exports["bert2"], p, tmp_path / "out", env={"LOOKALIKE_MAX_RECORD_MB": "1"})
    one_line(r, "big.txt", "line 2", "record limit")


def test_a_46_mb_line_embeds_in_bounded_memory(tiny_exports, tmp_path):
    """The text is cut before tokenizing (engine/cut.py): memory follows max_length, not the line."""
    p = tmp_path / "long.txt"
    with open(p, "wb") as fh:
        fh.write(b"a short first row\n")
        for _ in range(46):
            fh.write(b"lorem ipsum dolor sit amet " * 38836)
        fh.write(b"\n")
    r = run_cli("embed", tiny_exports["bert2"], p, tmp_path / "out", "--max-length", "64", mem_mb=2048, timeout=300)
    assert r.rc == 0, r.err[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["total_rows"] == 2 and manifest["n_truncated"] == 1
    assert r.max_rss_mb < 1200, r.max_rss_mb


def test_csv_fields_over_the_csv_module_default_are_read(tmp_path):
    big = "x " * 200_000
    p = tmp_path / "wide.csv"
    p.write_text('id,text\n1,"' + big + '"\n2,small\n')
    recs = list(read_corpus(p))
    assert [r.id for r in recs] == ["1", "2"] and recs[0].text == big
    t = tmp_path / "wide.tsv"
    t.write_text("id\ttext\n1\t" + big + "\n")
    assert list(read_corpus(t))[0].text == big


def test_a_non_utf8_file_name_works(tiny_exports, tmp_path):
    name = os.fsdecode(b"corpus-\xff\xfe.txt")
    (tmp_path / name).write_text("one text\nanother text\n")
    r = run_cli("embed", tiny_exports["bert2"], os.fsencode(tmp_path / name), tmp_path / "out", timeout=120)
    assert r.rc == 0, r.err[-2000:]
    from lookalike.data import CorpusSpec

    assert CorpusSpec(str(tmp_path / name)).fingerprint()


def test_stdin_over_its_spool_limit_is_one_line_and_leaves_nothing(tiny_exports, tmp_path):
    r = run_cli("embed", tiny_exports["bert2"], "-", tmp_path / "out", stdin=b"a line of text\n" * 200_000,
                env={"LOOKALIKE_MAX_STDIN_MB": "1"})
    one_line(r, "spool limit")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_sigterm_removes_the_stdin_spool(tiny_exports, tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "lookalike.cli", "embed", str(tiny_exports["bert2"]), "-",
                          str(tmp_path / "out")], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(200):  # stream until the spool exists, then stop the run mid-spool
            p.stdin.write(b"some text to embed\n" * 5000)
            p.stdin.flush()
            if list(tmp_path.glob(".out.stdin-*")):
                break
            time.sleep(0.05)
        assert list(tmp_path.glob(".out.stdin-*")), "the spool never appeared"
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    finally:
        p.kill()
    assert not list(tmp_path.glob(".out.stdin-*")), "the spool survived SIGTERM"
    assert "Traceback" not in p.stderr.read().decode()


def test_a_spool_left_by_sigkill_is_removed_by_the_next_run(tiny_exports, tmp_path):
    dead = tmp_path / ".out.stdin-999999999-abcdefgh"  # no such pid
    dead.mkdir()
    (dead / "stdin").write_text("left behind\n")
    mine = tmp_path / ".out.stdin-notes"  # not a spool's name: a user's, left alone
    mine.mkdir()
    before = snapshot(mine)
    r = run_cli("embed", tiny_exports["bert2"], "-", tmp_path / "out", stdin=b"one\ntwo\n")
    assert r.rc == 0, r.err[-2000:]
    assert not dead.exists() and snapshot(mine) == before


@pytest.mark.parametrize("content, fmt", [(b"\x1f\x8b\x08\x00garbage", "text"), (b"BZh9garbage", "text")])
def test_damaged_archives_are_one_error(tmp_path, content, fmt):
    p = tmp_path / ("c.txt.gz" if content.startswith(b"\x1f") else "c.txt.bz2")
    p.write_bytes(content)
    with pytest.raises(InputError, match="cannot decompress"):
        list(read_corpus(p, fmt))


def test_json_is_sniffed_from_its_head_and_parsed_once(tmp_path, monkeypatch):
    import lookalike.data.readers as readers

    p = tmp_path / "squad.json"
    p.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": "Ann wrote it.", "qas": [{"id": "q1", "question": "Who?", "answers": [
            {"text": "Ann", "answer_start": 0}], "is_impossible": False}]}]}]}))
    calls = []
    real = readers.read_document
    monkeypatch.setattr(readers, "read_document", lambda *a, **k: calls.append(a) or real(*a, **k))
    recs = list(read_corpus(p))
    assert [r.id for r in recs] == ["q1"] and len(calls) == 1


def test_a_gzip_of_real_text_within_the_ratio_reads_whole(tmp_path):
    p = tmp_path / "ok.txt.gz"
    with gzip.open(p, "wt") as fh:
        for i in range(20000):
            fh.write(f"line {i} with some ordinary words in it\n")
    assert sum(1 for _ in read_corpus(p)) == 20000
