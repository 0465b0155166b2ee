"""Class 3, everything read is verified: what a model or a store reads is covered by a checksum or refused, even
when whoever changed it also recomputed the checksums a file carries about itself."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hostile_tools import one_line, run_cli

from lookalike.core.manifest import MANIFEST, model_digest
from lookalike.errors import LookalikeError
from lookalike.files import sha256_file


def _copy_export(src, dst):
    shutil.copytree(src, dst)
    return dst


def _rewrite_manifest(folder, **changes):
    m = json.loads((folder / MANIFEST).read_text())
    m.update(changes)
    (folder / MANIFEST).write_text(json.dumps(m, indent=2))


def _to_external(folder, location="weights.bin"):
    import onnx

    proto = onnx.load(str(folder / "model.onnx"))
    onnx.save_model(proto, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024)


def test_external_weights_are_part_of_the_model_hash(tiny_exports, corpus_file, tmp_path):
    from lookalike import Embedder

    ext = _copy_export(tiny_exports["bert2"], tmp_path / "ext")
    _to_external(ext)
    assert (ext / "weights.bin").stat().st_size > 1000
    # re-labelled honestly: the digest covers model.onnx and weights.bin, and the vectors are the model's
    _rewrite_manifest(ext, sha256=model_digest(ext / "model.onnx"), files={})
    texts = ["a text", "another one"]
    assert np.allclose(Embedder(ext).encode(texts), Embedder(tiny_exports["bert2"]).encode(texts), atol=1e-6)
    # one weight changed: the same manifest no longer matches, so no store is labelled with the old hash
    data = bytearray((ext / "weights.bin").read_bytes())
    data[100:104] = np.float32(3.0).tobytes()
    (ext / "weights.bin").write_bytes(bytes(data))
    one_line(run_cli("embed", ext, corpus_file, tmp_path / "store"), "model.onnx", "external weights")
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("location", ["../elsewhere.bin", "/tmp/lookalike-hostile-weights.bin"])
def test_external_weights_outside_the_folder_are_refused(tiny_exports, tmp_path, location):
    import onnx

    ext = _copy_export(tiny_exports["bert2"], tmp_path / "ext")
    _to_external(ext)
    proto = onnx.load(str(ext / "model.onnx"), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save_model(proto, str(ext / "model.onnx"))
    shutil.copyfile(ext / "weights.bin", (ext / location) if location.startswith("..") else location)
    from lookalike.core.manifest import _hash_and_scan

    _rewrite_manifest(ext, sha256=_hash_and_scan(ext / "model.onnx", b"")[0])
    try:
        one_line(run_cli("embed", ext, "-", tmp_path / "store", stdin=b"text\n"), location, "not a plain file name")
    finally:
        if location.startswith("/"):
            os.unlink(location)


def test_an_edited_tokenizer_is_refused(tiny_exports, corpus_file, tmp_path):
    ext = _copy_export(tiny_exports["bert2"], tmp_path / "ext")
    tok = json.loads((ext / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = "the", "movie"
    vocab[a], vocab[b] = vocab[b], vocab[a]  # two words swapped: same size, other vectors
    (ext / "tokenizer.json").write_text(json.dumps(tok))
    one_line(run_cli("embed", ext, corpus_file, tmp_path / "store"), "tokenizer.json", "sha256")


@pytest.mark.parametrize("name", ["/dev/zero", "../bert4/model.onnx", "/etc/passwd", "zero"])
def test_manifest_file_names_must_be_plain_regular_files(tiny_exports, corpus_file, tmp_path, name):
    ext = _copy_export(tiny_exports["bert2"], tmp_path / "ext")
    if name == "zero":
        (ext / "zero").symlink_to("/dev/zero")
    _rewrite_manifest(ext, file=name)
    r = run_cli("embed", ext, corpus_file, tmp_path / "store", timeout=60)
    one_line(r, repr(name) if "/" in name else name)


def _forge_shard(store, index, build):
    """Replace shard `index` with what `build(h5file, original)` writes, and recompute its manifest sha256."""
    import h5py

    path = store / f"part-{index:05d}.h5"
    with h5py.File(path, "r") as src:
        original = {k: src[k][:] for k in src}
        attrs = dict(src.attrs)
    path.unlink()
    with h5py.File(path, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        build(f, original)
    m = json.loads((store / "manifest.json").read_text())
    m["shards"][index]["sha256"] = sha256_file(path)
    (store / "manifest.json").write_text(json.dumps(m))


def _copy_columns(f, original, skip=("embedding",)):
    import h5py

    for k, v in original.items():
        if k not in skip:
            f.create_dataset(k, data=v, dtype=h5py.string_dtype("utf-8") if k == "id" else None)


def _point_outside(kind: str, other: Path, raw: Path):
    """A forge that copies a shard's columns but stores its embedding outside the shard, in one of HDF5's ways."""
    import h5py

    def forge(f, original):
        _copy_columns(f, original)
        if kind == "external link":
            f["embedding"] = h5py.ExternalLink(str(other), "embedding")
        elif kind == "external files":
            f.create_dataset("embedding", shape=(10, 32), dtype=np.float32, external=[(str(raw), 0, raw.stat().st_size)])
        else:
            layout = h5py.VirtualLayout(shape=(10, 32), dtype=np.float32)
            layout[:] = h5py.VirtualSource(str(other), "embedding", shape=(10, 32))
            f.create_virtual_dataset("embedding", layout)
    return forge


@pytest.mark.parametrize("kind", ["external link", "external files", "virtual"])
def test_a_shard_storing_data_outside_itself_is_refused(small_store, tmp_path, kind):
    import h5py

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    other, raw = tmp_path / "other.h5", tmp_path / "raw.bin"
    with h5py.File(other, "w") as f:
        f.create_dataset("embedding", data=np.ones((10, 32), np.float32))
    raw.write_bytes(np.ones((10, 32), np.float32).tobytes())
    _forge_shard(store, 0, _point_outside(kind, other, raw))
    one_line(run_cli("knn", store, tmp_path / "n.h5", "--k", "2"), "part-00000.h5", kind)


def test_the_entry_file_must_view_this_stores_shards(small_store, tmp_path):
    import h5py

    from lookalike.core.store import open_store

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(small_store, elsewhere)
    with h5py.File(store / "embeddings.h5", "a") as f:
        n, d = f["embedding"].shape
        del f["embedding"]
        layout = h5py.VirtualLayout(shape=(n, d), dtype=np.float32)
        layout[:10] = h5py.VirtualSource(str(elsewhere / "part-00000.h5"), "embedding", shape=(10, d))
        f.create_virtual_dataset("embedding", layout)
    with pytest.raises(LookalikeError, match="not one of this store's shards"):
        open_store(store)


def test_a_forged_token_cache_is_not_embedded(tiny_exports, corpus_file, tmp_path):
    """Ids replaced by other in-vocabulary ids, checksums recomputed: the spot check catches it."""
    import h5py

    cache = tmp_path / "tokens"
    assert run_cli("tokenize", tiny_exports["bert2"], corpus_file, cache, "--max-length", "32").rc == 0
    shard = cache / "tok-00000.h5"
    with h5py.File(shard, "a") as f:
        ids = f["input_ids"][:]
        ids[1:-1] = np.where(ids[1:-1] > 2000, ids[1:-1] - 7, ids[1:-1] + 7)  # every row's words shifted
        f["input_ids"][...] = ids
    m = json.loads((cache / "manifest.json").read_text())
    m["shards"][0]["sha256"] = sha256_file(shard)
    (cache / "manifest.json").write_text(json.dumps(m))
    one_line(run_cli("embed", tiny_exports["bert2"], corpus_file, tmp_path / "s1", "--max-length", "32",
                     "--tokens", cache), "tokens", "not what the tokenizer makes")
    assert not (tmp_path / "s1").exists()


def test_a_forged_shared_token_cache_is_ignored_with_a_warning(tiny_exports, corpus_file, tmp_path):
    import h5py

    from lookalike.core.store import open_store

    env = {"LOOKALIKE_CACHE": str(tmp_path / "cache")}
    assert run_cli("tokenize", tiny_exports["bert2"], corpus_file, "--max-length", "32", env=env).rc == 0
    [shard] = list((tmp_path / "cache").rglob("tok-00000.h5"))
    with h5py.File(shard, "a") as f:
        ids = f["input_ids"][:]
        ids[1:4] = 1000
        f["input_ids"][...] = ids
    m = json.loads((shard.parent / "manifest.json").read_text())
    m["shards"][0]["sha256"] = sha256_file(shard)
    (shard.parent / "manifest.json").write_text(json.dumps(m))
    r = run_cli("embed", tiny_exports["bert2"], corpus_file, tmp_path / "s", "--max-length", "32", env=env)
    assert r.rc == 0 and "ignoring the shared token cache" in r.err, r.err
    truth = run_cli("embed", tiny_exports["bert2"], corpus_file, tmp_path / "t", "--max-length", "32", "--no-tokens",
                    env=env)
    assert truth.rc == 0
    assert np.array_equal(open_store(tmp_path / "s").embeddings(), open_store(tmp_path / "t").embeddings())
