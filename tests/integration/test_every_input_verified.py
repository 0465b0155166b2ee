"""Every input is verified, not only shards: manifests, shard attributes, model files, locks, token caches, neighbour
and OOD files; each case ends in a correct result or one line naming the file, record and field."""

from __future__ import annotations

import errno
import json
import os
import shutil

import h5py
import numpy as np
import pytest
from support import _one_line_error, _run  # the same one-line-error check as the faults tests

from lookalike.analysis.knn import knn_self, load_knn
from lookalike.analysis.ood import deep_knn_ood, load_ood
from lookalike.data import CorpusSpec
from lookalike.engine import OnnxModel, embed, open_store
from lookalike.engine.tokens import open_tokens, tokenize_corpus
from lookalike.errors import InputError, LookalikeError, ModelError, StoreError
from lookalike.files import WriterLock, sha256_file
from lookalike.params import EmbedParams

PARAMS = EmbedParams(max_length=64, shard_rows=50)


@pytest.fixture
def c200(shared_data, tmp_path):
    """200 SQuAD v2 questions as {"id", "text"}."""
    recs = list(CorpusSpec(shared_data / "squad2_dev500", limit=200).records())
    p = tmp_path / "c200.jsonl"
    p.write_text("".join(json.dumps({"id": r.id, "text": r.text}) + "\n" for r in recs))
    return p


@pytest.fixture
def store(tiny_exports, c200, tmp_path):
    out = tmp_path / "store"
    embed(tiny_exports["bert2"], c200, out, PARAMS)
    return out


def _manifest(folder):
    from support import recorded

    return dict(recorded(folder))


def _write_manifest(folder, m):
    (folder / "manifest.json").write_text(json.dumps(m))


def _rehash(folder, shard_file):
    """Tamper as an attacker would: the shard's checksum updated in the manifest to match the edit."""
    m = _manifest(folder)
    for s in m["shards"]:
        if s["file"] == shard_file:
            s["sha256"] = sha256_file(folder / shard_file)
    _write_manifest(folder, m)


# 1 ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit,needle", [
    (lambda m: m["shards"][-1].update(row_end=260), "covers rows 150..260 but says 50 rows"),
    (lambda m: m["shards"].pop(1), "names 'part-00002.h5', expected part-00001.h5"),
    (lambda m: m["shards"][0].pop("file"), "shard entry 0 has no str 'file'"),
    (lambda m: m.update(total_rows=150), "total_rows is 150, the shards hold 200"),
    (lambda m: m["shards"].reverse(), "entries out of order"),
])
def test_the_manifest_is_checked_as_a_whole(store, edit, needle):
    m = _manifest(store)
    edit(m)
    _write_manifest(store, m)
    with pytest.raises(StoreError, match="the manifest is damaged") as e:
        open_store(store)
    assert needle in str(e.value)
    r = _run("knn", store, store.parent / "k.h5")
    _one_line_error(r, "manifest is damaged")


def test_shard_attributes_are_checked_against_the_config(store):
    m = _manifest(store)
    m["config"]["pooling"] = "mean"
    _write_manifest(store, m)
    with pytest.raises(StoreError, match="written with pooling 'cls', the manifest's config says 'mean'"):
        open_store(store)


def test_duplicate_ids_inside_a_store_are_refused(store):
    first = h5py.File(store / "part-00000.h5", "r")["id"].asstr()[0]
    with h5py.File(store / "part-00001.h5", "r+") as f:
        ids = f["id"].asstr()[:]
        ids[3] = first
        del f["id"]
        f.create_dataset("id", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
    _rehash(store, "part-00001.h5")
    with pytest.raises(StoreError, match=f"id '{first}' is at rows 0 and 53"):
        open_store(store)


# 2 ------------------------------------------------------------------------------------------------------------
def test_the_model_file_is_verified(tiny_exports, c200, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_exports["bert2"], model)
    data = bytearray((model / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 is not the one lookalike.json records"):
        OnnxModel(model, device="cpu")
    # swapped for another export entirely
    shutil.copyfile(tiny_exports["bert4"] / "model.onnx", model / "model.onnx")
    r = _run("embed", model, c200, tmp_path / "s")
    _one_line_error(r, "re-export the model")
    assert not (tmp_path / "s").exists()


# 3 ------------------------------------------------------------------------------------------------------------
def test_a_symlinked_lock_never_writes_through(tiny_exports, c200, tmp_path):
    out = tmp_path / "s"
    embed(tiny_exports["bert2"], c200, out, PARAMS)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    (out / ".lookalike.lock").unlink()
    (out / ".lookalike.lock").symlink_to(notes)
    r = _run("embed", tiny_exports["bert2"], c200, out, "--max-length", 64, "--shard-rows", 50)
    _one_line_error(r, "is a symbolic link, not lookalike's lock file")
    assert notes.read_text() == "my notes"


# 4 ------------------------------------------------------------------------------------------------------------
def test_a_corpus_edited_during_embed_is_not_finalised(tiny_exports, c200, tmp_path):
    lines = c200.read_text().splitlines(keepends=True)

    def edit(shards_done):
        if shards_done == 1:  # rewrite bytes of a later line, in place, same size
            rec = json.loads(lines[150])
            rec["text"] = "X" * len(rec["text"])
            new = lines[:150] + [json.dumps(rec) + "\n"] + lines[151:]
            with open(c200, "r+") as f:
                f.write("".join(new))

    with pytest.raises(InputError, match="the corpus changed while it was being embedded") as e:
        embed(tiny_exports["bert2"], c200, tmp_path / "s", PARAMS, on_shard=edit, tokens=False)
    assert str(c200) in str(e.value)
    assert not _manifest(tmp_path / "s")["complete"]
    with pytest.raises(StoreError):  # and it will not resume on the new content
        embed(tiny_exports["bert2"], c200, tmp_path / "s", PARAMS, tokens=False)


# 5 ------------------------------------------------------------------------------------------------------------
def _cache(tiny_exports, c200, tmp_path):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_exports["bert2"])
    out = tmp_path / "tc"
    tokenize_corpus(tok, c200, out, max_length=64, shard_rows=50)
    return out


@pytest.mark.parametrize("tamper,needle", [
    (lambda f: f["input_ids"].__setitem__(5, 10 ** 6), "token id 1000000 is outside the vocabulary"),
    (lambda f: f["input_ids"].__setitem__(5, -3), "token id -3 is outside the vocabulary"),
    (lambda f: f["offsets"].__setitem__(4, 10 ** 5), "offsets"),
])
def test_a_tampered_token_cache_is_refused(tiny_exports, c200, tmp_path, tamper, needle):
    cache = _cache(tiny_exports, c200, tmp_path)
    with h5py.File(cache / "tok-00001.h5", "r+") as f:
        tamper(f)
    _rehash(cache, "tok-00001.h5")
    r = _run("embed", tiny_exports["bert2"], c200, tmp_path / "s", "--max-length", 64, "--shard-rows", 50,
             "--tokens", cache)
    _one_line_error(r, needle, "tok-00001.h5")


# 6 ------------------------------------------------------------------------------------------------------------
def test_neighbour_and_ood_files_are_verified(store, tmp_path):
    knn_path = tmp_path / "k.h5"
    knn_self(open_store(store), 5).save(knn_path)
    assert load_knn(knn_path).neighbors.shape == (200, 5)
    with h5py.File(knn_path, "r+") as f:
        f["neighbors"][0, 0] = 9999
    with pytest.raises(InputError, match="does not match the checksum"):
        load_knn(knn_path)
    with h5py.File(knn_path, "r+") as f:  # an older file (no checksum): the range check still holds
        del f.attrs["content_sha256"]
    with pytest.raises(InputError, match="neighbour row 9999 is outside 0..199"):
        load_knn(knn_path)
    r = _run("-q", "agree", "--knn", f"a={knn_path}", "--knn", f"b={knn_path}", "--k", 5)
    _one_line_error(r, "neighbour row 9999")

    ood_path = tmp_path / "o.json"
    s = open_store(store)
    deep_knn_ood(s, s, 5, allow_overlap=True).save(ood_path)
    obj = json.loads(ood_path.read_text())
    obj["results"]["5"]["ood"][0] = not obj["results"]["5"]["ood"][0]
    ood_path.write_text(json.dumps(obj))
    with pytest.raises(InputError, match="does not match the checksum"):
        load_ood(ood_path)


# 7 ------------------------------------------------------------------------------------------------------------
def test_disk_full_is_one_line_and_loses_nothing(tiny_exports, c200, tmp_path, monkeypatch):
    from lookalike.core import shards

    real = shutil.disk_usage
    calls = {"n": 0}

    def full(path):
        calls["n"] += 1
        usage = real(path)
        return usage._replace(free=1000) if calls["n"] == 3 else usage  # the third shard finds the disk full

    monkeypatch.setattr(shards.shutil, "disk_usage", full)
    out = tmp_path / "s"
    r = _run("embed", tiny_exports["bert2"], c200, out, "--max-length", 64, "--shard-rows", 50)
    _one_line_error(r, "part-00002.h5: no space left on device", "nothing written so far is lost")
    assert len(_manifest(out)["shards"]) == 2

    # ENOSPC raised while a shard is being written and closed
    def enospc(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards.shutil, "disk_usage", real)
    from lookalike.core import store as store_mod

    monkeypatch.setattr(store_mod, "write_shard_file", enospc)
    r = _run("embed", tiny_exports["bert2"], c200, out, "--max-length", 64, "--shard-rows", 50)
    _one_line_error(r, "part-00002.h5: no space left on device")
    monkeypatch.undo()
    r = _run("embed", tiny_exports["bert2"], c200, out, "--max-length", 64, "--shard-rows", 50)
    assert r.exit_code == 0, r.output
    clean = tmp_path / "clean"
    embed(tiny_exports["bert2"], c200, clean, PARAMS)
    assert [s["sha256"] for s in _manifest(out)["shards"]] == [s["sha256"] for s in _manifest(clean)["shards"]]


# 8 ------------------------------------------------------------------------------------------------------------
def test_ood_refuses_held_out_sets_that_are_the_bank(tiny_exports, shared_data, c200, store, tmp_path):
    s = open_store(store)
    other = tmp_path / "other"
    embed(tiny_exports["bert2"], CorpusSpec(shared_data / "imdb" / "imdb_test_2k.tsv", limit=30), other, PARAMS)
    assert deep_knn_ood(s, open_store(other), 1, val=None).meta.get("bank_overlap") is None
    with pytest.raises(InputError, match="the val store holds 200 of the bank's points"):
        deep_knn_ood(s, open_store(other), 1, val=s)
    part = tmp_path / "part"
    embed(tiny_exports["bert2"], CorpusSpec(c200, limit=60), part, PARAMS)  # the same corpus, shared ids
    with pytest.raises(InputError, match="in-test store holds 60 of the bank's points"):
        deep_knn_ood(s, open_store(other), 1, val=None, in_test=open_store(part))
    res = deep_knn_ood(s, open_store(part), 1, in_test=open_store(part), allow_overlap=True)
    assert res.meta["bank_overlap"] == {"test": 60, "in-test": 60}
    r = _run("ood", "--train", store, "--test", other, "--val", store, tmp_path / "o.json")
    _one_line_error(r, "--allow-overlap")


def test_max_length_above_the_model_is_said(tiny_exports, c200, tmp_path):
    r = _run("embed", tiny_exports["bert2"], c200, tmp_path / "s", "--max-length", 1024, "--limit", 5)
    assert r.exit_code == 0, r.output
    assert "warning: max length 1024 is more than the model's 512 positions; using 512" in r.stderr


def test_a_dangling_output_symlink_is_named(tiny_exports, c200, tmp_path):
    (tmp_path / "out").symlink_to(tmp_path / "nowhere")
    r = _run("embed", tiny_exports["bert2"], c200, tmp_path / "out")
    _one_line_error(r, "is a symbolic link to", "which does not exist")


def test_a_reader_during_a_write_is_told_it_is_being_written(store):
    m = _manifest(store)
    m["complete"] = False
    m["total_rows"] = None
    _write_manifest(store, m)
    with WriterLock(store):
        with pytest.raises(StoreError, match=f"is being written by pid {os.getpid()}"):
            open_store(store)
    with pytest.raises(StoreError, match="store is incomplete"):
        open_store(store)


def test_everything_still_opens_clean(store, tiny_exports, c200, tmp_path):
    """The checks refuse only what is wrong: a fresh store, cache, knn and OOD file all load."""
    assert len(open_store(store)) == 200
    cache = _cache(tiny_exports, c200, tmp_path)
    assert len(open_tokens(cache)) == 200
    k = knn_self(open_store(store), 3)
    k.save(tmp_path / "k.h5")
    assert np.array_equal(load_knn(tmp_path / "k.h5").neighbors, k.neighbors)
    with pytest.raises(LookalikeError):  # a cache of another max length is still refused when named
        embed(tiny_exports["bert2"], c200, tmp_path / "s2", EmbedParams(max_length=32, shard_rows=50), tokens=cache)
