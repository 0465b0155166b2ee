"""Fault injection on tiny exports: every case ends in a correct result or a one-line error (exit 2) naming the file,
record and field, with nothing lost or deleted that lookalike did not create."""

from __future__ import annotations

import errno
import json
import os
import textwrap

import h5py
import numpy as np
import pytest
import yaml
from support import _one_line_error, _run

from lookalike.data import CorpusSpec
from lookalike.engine import embed, open_store
from lookalike.errors import InputError, LookalikeError, StoreError
from lookalike.files import WriterLock
from lookalike.params import EmbedParams


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.jsonl"
    p.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document number {i} " * (1 + i % 7)}) + "\n"
                         for i in range(40)))
    return p


# 1 ------------------------------------------------------------------------------------------------------------
def test_embed_never_deletes_what_it_did_not_create(tiny_exports, corpus, tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "thesis.tmp").write_text("draft")
    r = _run("embed", tiny_exports["bert2"], corpus, out)
    _one_line_error(r, "not empty and not a lookalike store", "thesis.tmp")
    assert (out / "thesis.tmp").read_text() == "draft"
    # inside a real store, a user's file with a temporary-looking name survives a resume; the store's own
    # leftovers (a crashed writer's temporaries) are cleaned
    store = tmp_path / "s"
    embed(tiny_exports["bert2"], corpus, store, EmbedParams(shard_rows=10))
    (store / "notes.tmp").write_text("mine")
    (store / "part-00009.h5.4242-deadbeef.tmp").write_text("a crashed writer's")
    m = json.loads((store / "manifest.json").read_text())
    m["complete"], m["shards"] = False, m["shards"][:2]
    (store / "manifest.json").write_text(json.dumps(m))
    embed(tiny_exports["bert2"], corpus, store, EmbedParams(shard_rows=10))
    assert (store / "notes.tmp").read_text() == "mine"
    assert not (store / "part-00009.h5.4242-deadbeef.tmp").exists()
    assert _run("embed", tiny_exports["bert2"], corpus, tmp_path / "corpus.jsonl").exit_code == 2  # OUT is a file


# 2 ------------------------------------------------------------------------------------------------------------
def test_a_second_writer_fails_at_once(tiny_exports, corpus, tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    with WriterLock(out):
        with pytest.raises(LookalikeError, match=f"is being written by pid {os.getpid()}"):
            embed(tiny_exports["bert2"], corpus, out)
    embed(tiny_exports["bert2"], corpus, out)  # the lock is released with its holder
    assert len(open_store(out)) == 40


# 3 ------------------------------------------------------------------------------------------------------------
def _swap_rows(shard):
    with h5py.File(shard, "r+") as f:
        e = f["embedding"][:]
        e[[0, 1]] = e[[1, 0]]
        f["embedding"][:] = e


def test_readers_verify_shards_and_embed_repairs_them(tiny_exports, corpus, tmp_path):
    store = tmp_path / "s"
    embed(tiny_exports["bert2"], corpus, store, EmbedParams(shard_rows=10))
    good = open_store(store).embeddings()
    _swap_rows(store / "part-00001.h5")
    with pytest.raises(StoreError, match=r"part-00001\.h5: checksum mismatch.*re-run the `lookalike embed`"):
        open_store(store)
    r = _run("knn", store, tmp_path / "nn.h5", "--k", "3")
    _one_line_error(r, "part-00001.h5", "checksum mismatch")
    r = _run("ood", "--train", store, "--test", store, tmp_path / "o.json")
    _one_line_error(r, "part-00001.h5")
    shard = store / "part-00002.h5"
    shard.write_bytes(shard.read_bytes()[:2000])  # truncated
    _one_line_error(_run("knn", store, tmp_path / "nn.h5", "--k", "3"), "part-00001.h5")
    # the repair the message names: re-run the same embed; the damaged shards are redone, the result is exact
    embed(tiny_exports["bert2"], corpus, store, EmbedParams(shard_rows=10))
    np.testing.assert_array_equal(open_store(store).embeddings(), good)
    # a store whose manifest lies about the rows is refused too
    m = json.loads((store / "manifest.json").read_text())
    m["shards"][0]["rows"] = 9
    (store / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="part-00000.h5"):
        open_store(store)


# 5 ------------------------------------------------------------------------------------------------------------
def test_ood_refuses_stores_of_different_features(tiny_exports, corpus, tmp_path):
    embed(tiny_exports["bert2"], corpus, tmp_path / "cls", EmbedParams(pooling="cls"))
    embed(tiny_exports["bert2"], corpus, tmp_path / "mean", EmbedParams(pooling="mean"))
    embed(tiny_exports["bert4"], corpus, tmp_path / "other")
    r = _run("ood", "--train", tmp_path / "cls", "--test", tmp_path / "mean", tmp_path / "o.json")
    _one_line_error(r, "differ in pooling")
    r = _run("ood", "--train", tmp_path / "cls", "--test", tmp_path / "cls", "--in-test", tmp_path / "other",
             tmp_path / "o.json")
    assert r.exit_code == 2  # bert4 has another dimension and model
    assert not (tmp_path / "o.json").exists()


# 6 ------------------------------------------------------------------------------------------------------------
def test_an_edit_anywhere_is_another_corpus_and_paths_do_not_matter(tiny_exports, tmp_path, monkeypatch):
    big = tmp_path / "big.txt"
    lines = [f"line {i} " + "x" * 200 for i in range(6000)]  # > 1 MiB
    big.write_text("\n".join(lines) + "\n")
    assert big.stat().st_size > (1 << 20)
    fp = CorpusSpec(big).fingerprint()
    edited = lines.copy()
    edited[-1] = edited[-1][:-1] + "y"  # same size, after the first MiB
    big.write_text("\n".join(edited) + "\n")
    assert CorpusSpec(big).fingerprint() != fp
    small = tmp_path / "small.txt"
    small.write_text("a\nb\nc\n")
    monkeypatch.chdir(tmp_path)
    assert CorpusSpec("small.txt").fingerprint() == CorpusSpec(small).fingerprint()
    embed(tiny_exports["bert2"], "small.txt", tmp_path / "s")
    assert embed(tiny_exports["bert2"], small, tmp_path / "s").get("already_complete")  # same corpus
    small.write_text("a\nb\nd\n")
    with pytest.raises(StoreError, match="corpus_fingerprint"):
        embed(tiny_exports["bert2"], small, tmp_path / "s")


# 7 ------------------------------------------------------------------------------------------------------------
def test_a_failed_run_leaves_nothing_that_blocks_the_retry(tiny_exports, corpus, tmp_path):
    out = tmp_path / "s"
    r = _run("embed", tiny_exports["bert2"], tmp_path / "missing.jsonl", out, "--max-length", "32")
    _one_line_error(r, "missing.jsonl", "no such file")
    assert not out.exists()
    assert _run("embed", tiny_exports["bert2"], corpus, out, "--max-length", "64").exit_code == 0


# 8 ------------------------------------------------------------------------------------------------------------
def test_warnings_print_by_default_and_q_silences_them(tiny_exports, corpus, tmp_path):
    store = tmp_path / "s"
    assert _run("embed", tiny_exports["bert2"], corpus, store, "--shard-rows", "10").exit_code == 0
    for quiet in (False, True):
        _swap_rows(store / "part-00002.h5")
        r = _run(*(["-q"] if quiet else []), "embed", tiny_exports["bert2"], corpus, store, "--shard-rows", "10")
        assert r.exit_code == 0, r.output
        warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
        assert (warned == []) == quiet, r.stderr
        if not quiet:
            assert len(warned) == 1 and "part-00002.h5" in warned[0] and "re-doing it" in warned[0]


# 9 ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps,needle", [
    ({"embed": {"backend": "ray", "address": "ray://evil:10001"}}, "comes from the command line"),
    ({"embed": {"runtime_env": {"pip": ["x"]}}}, "unknown key 'runtime_env'"),
    ({"embed": {"max_lenght": 64}}, "did you mean 'max_length'"),
    ({"knn": {"k": "ten"}}, "field 'k': expected an integer"),
    ({"ood": {"tpr": 1.5}}, "above the maximum"),
    ({"embedd": {}}, "did you mean 'embed'"),
])
def test_experiment_files_are_schema_checked(tmp_path, steps, needle):
    cfg = {"models": [{"name": "a", "base": "minilm"}], "steps": steps}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(cfg))
    _one_line_error(_run("run", tmp_path / "e.yaml", "-o", tmp_path / "out"), "e.yaml", needle)
    assert not (tmp_path / "out").exists()


# 10 -----------------------------------------------------------------------------------------------------------
def test_expected_failures_are_one_line(tiny_exports, corpus, tmp_path, monkeypatch):
    embed(tiny_exports["bert2"], CorpusSpec(corpus, limit=12), tmp_path / "s12")
    # IVF on fewer points than its default lists: a correct result (the exact neighbours), not a FAISS traceback
    r = _run("knn", tmp_path / "s12", tmp_path / "ivf.h5", "--index", "ivf", "--k", "3")
    assert r.exit_code == 0 and json.loads(r.stdout)["recall_at_k"] == 1.0, r.output
    assert _run("knn", tmp_path / "s12", tmp_path / "flat.h5", "--k", "3").exit_code == 0
    from lookalike.analysis.knn import load_knn

    np.testing.assert_array_equal(load_knn(tmp_path / "ivf.h5").neighbors, load_knn(tmp_path / "flat.h5").neighbors)
    for args in (["knn", tmp_path / "s12", tmp_path / "nn.h5", "--block-rows", "0"],
                 ["embed", tiny_exports["bert2"], corpus, tmp_path / "e", "--max-length", "-5"],
                 ["embed", tiny_exports["bert2"], corpus, tmp_path / "e", "--max-length", "0"],
                 ["embed", tiny_exports["bert2"], corpus, tmp_path / "e", "--limit", "0"]):
        r = _run(*args)
        assert r.exit_code == 2 and "Traceback" not in r.output and "Invalid value" in r.output, r.output
    (tmp_path / "folder").mkdir()
    _one_line_error(_run("knn", tmp_path / "s12", tmp_path / "folder", "--k", "3"), "is a folder")
    (tmp_path / "user.h5").write_text("a user's file")
    _one_line_error(_run("knn", tmp_path / "s12", tmp_path / "user.h5", "--k", "3"), "refusing to replace it")
    assert (tmp_path / "user.h5").read_text() == "a user's file"
    (tmp_path / "p.json").write_text("{}")
    (tmp_path / "na.json").write_text('["not", "a", "mapping"]')
    r = _run("evaluate", tmp_path / "corpus.jsonl", tmp_path / "p.json", "--na-prob-file", tmp_path / "na.json",
             "--allow-missing")
    assert r.exit_code == 2 and "Traceback" not in r.output
    preds = {f"d{i}": "" for i in range(40)}
    (tmp_path / "p.json").write_text(json.dumps(preds))
    (tmp_path / "na.json").write_text(json.dumps({"d0": "high"}))
    _one_line_error(_run("evaluate", corpus, tmp_path / "p.json", "--na-prob-file", tmp_path / "na.json",
                         "--text-field", "text", "--pair-field", "text"), "question d0", "not a finite number")
    (tmp_path / "m.yaml").write_text("models: 5\n")
    _one_line_error(_run("run", tmp_path / "m.yaml"), "m.yaml", "field 'models'")

    import lookalike.files as files

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o.json"))

    monkeypatch.setattr(files, "atomic_write_json", disk_full)
    import lookalike.outputs as outputs_mod

    monkeypatch.setattr(outputs_mod.OwnedFolder, "write_json", disk_full)
    _one_line_error(_run("ood", "--train", tmp_path / "s12", "--test", tmp_path / "s12", "--k", "2",
                         "--allow-overlap", tmp_path / "o.json"), "No space left on device")


# 11 -----------------------------------------------------------------------------------------------------------
def test_renames_are_made_durable(tiny_exports, corpus, tmp_path, monkeypatch):
    import lookalike.files as files

    calls = []
    real = files.fsync_dir
    monkeypatch.setattr(files, "fsync_dir", lambda p: (calls.append(str(p)), real(p)))
    real_replace = os.replace

    def replace(a, b):
        calls.append(f"rename {os.path.basename(b)}")
        return real_replace(a, b)

    real_link = os.link

    def link(a, b):  # a free name is taken with a hard link (never replacing what appeared meanwhile)
        calls.append(f"rename {os.path.basename(b)}")
        return real_link(a, b)

    monkeypatch.setattr(files.os, "replace", replace)
    monkeypatch.setattr(files.os, "link", link)
    embed(tiny_exports["bert2"], corpus, tmp_path / "s", EmbedParams(shard_rows=20))
    store = str(tmp_path / "s")
    for name in ("part-00000.h5", "manifest.json", "embeddings.h5"):
        i = max(i for i, c in enumerate(calls) if c == f"rename {name}")
        assert calls[i + 1] == store, (name, calls[i:i + 2])  # every rename is followed by the folder's fsync


# also ---------------------------------------------------------------------------------------------------------
def test_jsonl_ids_come_from_the_records_when_they_have_them(tiny_exports, tmp_path):
    with_ids = tmp_path / "a.jsonl"
    with_ids.write_text('{"id": "x7", "text": "a"}\n{"id": "y9", "text": "b"}\n')
    stats = embed(tiny_exports["bert2"], with_ids, tmp_path / "a")
    assert list(open_store(tmp_path / "a").ids) == ["x7", "y9"] and "field 'id'" in stats["ids"]
    without = tmp_path / "b.jsonl"
    without.write_text('{"text": "a"}\n{"text": "b"}\n')
    stats = embed(tiny_exports["bert2"], without, tmp_path / "b")
    assert list(open_store(tmp_path / "b").ids) == ["0", "1"] and stats["ids"] == "row numbers"
    mixed = tmp_path / "c.jsonl"
    mixed.write_text('{"id": "x7", "text": "a"}\n{"text": "b"}\n')
    with pytest.raises(InputError, match="line 2: field 'id': missing"):
        embed(tiny_exports["bert2"], mixed, tmp_path / "c")


# kill -9 at random points, then resume: byte-identical results --------------------------------------------------
KILLABLE = textwrap.dedent("""
    import sys
    from lookalike.cli import main
    sys.argv = ["lookalike", *sys.argv[1:]]
    main()
""")
