"""Engine vectors against PyTorch; order, ids, shards, resume after kill -9, store reader, bad input."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

from lookalike.cli import cli
from lookalike.data import CorpusSpec
from lookalike.engine import align, embed, open_store
from lookalike.errors import InputError, ModelError, StoreError
from lookalike.params import EmbedParams
from support import recorded


def _corpus(tmp_path, n=60):
    words = "the model compressed large small agree neighbour vector batch token shard".split()
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=int(rng.integers(0, 90)))) for _ in range(n)]
    lines[3] = ""  # empty text: embedded as the empty text and counted
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"doc-{i}", "text": t}) for i, t in enumerate(lines)) + "\n")
    return path, lines


def _torch_cls(model_dir, texts, max_length, pairs=None):
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    out = []
    for i in range(0, len(texts), 16):
        enc = tok(texts[i:i + 16], pairs[i:i + 16] if pairs else None, truncation=True, max_length=max_length,
                  padding=True, return_tensors="pt")
        with torch.no_grad():
            out.append(model(**enc).last_hidden_state[:, 0].numpy())
    return np.concatenate(out)


def test_vectors_match_pytorch_and_order_survives(tiny_models, tiny_exports, tmp_path):
    path, lines = _corpus(tmp_path)
    stats = embed(tiny_exports["bert2"], CorpusSpec(path, id_field="id"), tmp_path / "store",
                  EmbedParams(max_length=64, shard_rows=7, sort_window=5, batch_tokens=256))
    store = open_store(tmp_path / "store")
    assert len(store) == len(lines) and store.dim == 32
    assert list(store.ids) == [f"doc-{i}" for i in range(len(lines))]
    assert stats["n_empty"] == 1 and stats["shards"] == 9
    ref = _torch_cls(tiny_models["bert2"], lines, 64)
    np.testing.assert_allclose(store.embeddings(), ref, atol=1e-4)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_models["bert2"])
    full = [len(tok(t)["input_ids"]) for t in lines]
    np.testing.assert_array_equal(store.truncated, np.array(full) > 64)
    np.testing.assert_array_equal(store.n_tokens, np.minimum(full, 64))
    assert stats["n_truncated"] == sum(f > 64 for f in full) > 0
    # one HDF5 entry point that any tool can read
    with h5py.File(tmp_path / "store" / "embeddings.h5", "r") as f:
        np.testing.assert_array_equal(f["embedding"][:], store.embeddings())
        assert list(f["id"].asstr()[:]) == list(store.ids)
    # blocks crossing shard boundaries give the same array
    blocks = list(store.iter_blocks(rows=10))
    assert [s for s, _ in blocks] == list(range(0, 60, 10))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), store.embeddings())


def test_pairs_normalize_float16(tiny_models, tiny_exports, shared_data, tmp_path):
    embed(tiny_exports["bert2"], CorpusSpec(shared_data / "squad2_dev500", limit=40), tmp_path / "sq",
          EmbedParams(max_length=128, normalize=True, dtype="float16"))
    store = open_store(tmp_path / "sq")
    recs = json.loads((shared_data / "squad2_dev500" / "queries.json").read_text())["queries"][:40]
    ref = _torch_cls(tiny_models["bert2"], [r["question"] for r in recs], 128, [r["context"] for r in recs])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    with h5py.File(tmp_path / "sq" / "part-00000.h5", "r") as f:
        assert f["embedding"].dtype == np.float16 and f.attrs["normalize"]
    np.testing.assert_allclose(store.embeddings(), ref, atol=2e-3)
    assert list(store.ids) == [r["id"] for r in recs]


def test_minilm_matches_pytorch(minilm_dir, minilm_export, shared_data, tmp_path):
    embed(minilm_export, CorpusSpec(shared_data / "imdb" / "imdb_1k.tsv", limit=24), tmp_path / "imdb",
          EmbedParams(max_length=256))
    lines = [l.rsplit("\t", 1)[0] for l in (shared_data / "imdb" / "imdb_1k.tsv").read_text().splitlines()[:24]]
    np.testing.assert_allclose(open_store(tmp_path / "imdb").embeddings(), _torch_cls(minilm_dir, lines, 256),
                               atol=1e-4)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from lookalike.data import CorpusSpec
    from lookalike.engine import embed
    from lookalike.params import EmbedParams
    model, corpus, out, when = sys.argv[1:5]
    def hook(n):
        if n == int(when):
            os.kill(os.getpid(), signal.SIGKILL)
    embed(model, CorpusSpec(corpus, id_field="id"), out,
          EmbedParams(shard_rows=6, sort_window=4, batch_tokens=256, max_length=64), on_shard=hook)
""")


def test_resume_after_kill_equals_uninterrupted(tiny_exports, tmp_path):
    path, lines = _corpus(tmp_path)
    params = EmbedParams(shard_rows=6, sort_window=4, batch_tokens=256, max_length=64)
    embed(tiny_exports["bert2"], CorpusSpec(path, id_field="id"), tmp_path / "clean", params)
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tiny_exports["bert2"]), str(path),
                           str(tmp_path / "crashed"), "3"], capture_output=True)
    assert proc.returncode == -9  # really killed
    manifest = recorded(tmp_path / "crashed")
    assert not manifest["complete"] and len(manifest["shards"]) == 3
    stats = embed(tiny_exports["bert2"], CorpusSpec(path, id_field="id"), tmp_path / "crashed", params)
    assert stats["resumed_from"] == 18 and stats["rows_this_run"] == len(lines) - 18
    a, b = open_store(tmp_path / "clean"), open_store(tmp_path / "crashed")
    assert list(a.ids) == list(b.ids)
    np.testing.assert_array_equal(a.embeddings(), b.embeddings())


def test_corrupt_shard_is_redone_with_warning(tiny_exports, tmp_path, caplog):
    path, _ = _corpus(tmp_path)
    spec, params = CorpusSpec(path, id_field="id"), EmbedParams(shard_rows=20, max_length=64)
    embed(tiny_exports["bert2"], spec, tmp_path / "s", params)
    before = open_store(tmp_path / "s").embeddings()
    shard = tmp_path / "s" / "part-00001.h5"
    data = bytearray(shard.read_bytes())
    data[-100:] = b"\x00" * 100
    shard.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        stats = embed(tiny_exports["bert2"], spec, tmp_path / "s", params)
    assert "part-00001.h5" in caplog.text and "corrupt" in caplog.text
    assert stats["resumed_from"] == 20
    np.testing.assert_array_equal(open_store(tmp_path / "s").embeddings(), before)


def test_refusals_and_bad_input(tiny_exports, tmp_path):
    path, _ = _corpus(tmp_path)
    spec = CorpusSpec(path, id_field="id")
    embed(tiny_exports["bert2"], spec, tmp_path / "s", EmbedParams(max_length=64))
    with pytest.raises(StoreError, match="other settings"):
        embed(tiny_exports["bert2"], spec, tmp_path / "s", EmbedParams(max_length=32))
    with pytest.raises(StoreError, match="other settings"):
        embed(tiny_exports["bert4"], spec, tmp_path / "s", EmbedParams(max_length=64))
    with pytest.raises(ModelError, match="not a lookalike export"):
        embed(tmp_path, path, tmp_path / "t")
    with pytest.raises(ModelError, match="feature-extraction"):
        embed(tiny_exports["qa"], path, tmp_path / "u")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "b"}\n')
    with pytest.raises(InputError, match="line 2: field 'text'"):
        embed(tiny_exports["bert2"], CorpusSpec(bad, id_field="id"), tmp_path / "v")
    result = CliRunner().invoke(cli, ["embed", str(tiny_exports["bert2"]), str(bad), str(tmp_path / "w"),
                                      "--id-field", "id"])
    assert result.exit_code == 2 and "line 2: field 'text': missing" in result.output
    assert not (tmp_path / "v").exists()  # a run that failed before writing anything leaves no stub behind


def test_align(tiny_exports, tmp_path):
    path, lines = _corpus(tmp_path, n=12)
    rev = tmp_path / "rev.jsonl"
    rows = [json.loads(l) for l in path.read_text().splitlines()][::-1]
    rev.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    embed(tiny_exports["bert2"], CorpusSpec(path, id_field="id"), tmp_path / "a")
    embed(tiny_exports["bert4"], CorpusSpec(rev, id_field="id"), tmp_path / "b")
    a, b = open_store(tmp_path / "a"), open_store(tmp_path / "b")
    ia, ib = align(a, b)
    assert list(a.ids[ia]) == list(b.ids[ib])
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(json.dumps(r) for r in rows[:5]) + "\n")
    embed(tiny_exports["bert2"], CorpusSpec(short, id_field="id"), tmp_path / "c")
    with pytest.raises(StoreError, match="different id sets"):
        align(a, open_store(tmp_path / "c"))


def test_cli_embed(tiny_exports, tmp_path):
    path, lines = _corpus(tmp_path, n=10)
    result = CliRunner().invoke(cli, ["embed", str(tiny_exports["bert2"]), str(path), str(tmp_path / "s"),
                                      "--id-field", "id", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == 10


def test_cuda_that_does_not_start_is_an_error_not_a_silent_cpu_run(tiny_exports, monkeypatch):
    """ONNX Runtime falls back to the CPU when its CUDA provider cannot start; the engine must say so."""
    import onnxruntime as ort

    from lookalike.engine import runtime

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a working CUDA provider is present")
    monkeypatch.setattr(runtime, "resolve_device", lambda device="auto": "cuda" if device == "cuda" else "cpu")
    with pytest.raises(ModelError, match="could not start its CUDA provider"):
        runtime.OnnxModel(tiny_exports["bert2"], device="cuda")
    assert runtime.OnnxModel(tiny_exports["bert2"], device="cpu").session.get_providers() == ["CPUExecutionProvider"]


def test_cpu_sessions_do_not_fuse_skip_layernorm(tiny_models, tmp_path):
    """ORT fuses Add+Add+LayerNorm into its (slow on CPU) SkipLayerNormalization; the engine's CPU sessions do not."""
    import onnx
    import onnxruntime as ort

    from lookalike.core.session import session_setup
    from lookalike.exporters import export

    export(str(tiny_models["bert2"]), tmp_path / "int8", quantize="int8", int8_scheme="dynamic-per-channel",
           optimize=False)  # pinned: `auto` picks a scheme by timing, and the test is about the graph

    def optimized_ops(disabled):
        opts, providers, _ = session_setup("cpu", 1)
        opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(str(tmp_path / "int8" / "model.onnx"), opts, providers=providers,
                             disabled_optimizers=disabled)
        return {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}

    assert "SkipLayerNormalization" in optimized_ops([])  # what ORT does on its own ...
    assert "SkipLayerNormalization" not in optimized_ops(session_setup("cpu", 1)[2])  # ... and the engine's sessions


def test_io_binding_gives_the_plain_paths_vectors(tiny_exports, shared_data, tmp_path):
    """IO binding (inputs uploaded in the batching stage, outputs bound to host memory; the CUDA default) makes
    exactly the store the plain session.run path makes. Exercised on the CPU device here."""
    from lookalike.engine import OnnxModel

    data = CorpusSpec(shared_data / "squad2_dev500", limit=50)
    params = EmbedParams(max_length=96, shard_rows=20, sort_window=16, batch_tokens=256)
    plain = OnnxModel(tiny_exports["bert2"], device="cpu")
    bound = OnnxModel(tiny_exports["bert2"], device="cpu", io_binding=True)
    assert not plain.io_binding and bound.io_binding
    embed(tiny_exports["bert2"], data, tmp_path / "plain", params, model=plain, tokens=False)
    embed(tiny_exports["bert2"], data, tmp_path / "bound", params, model=bound, tokens=False)
    a, b = open_store(tmp_path / "plain"), open_store(tmp_path / "bound")
    assert list(a.ids) == list(b.ids)
    np.testing.assert_array_equal(a.embeddings(), b.embeddings())
    feeds = bound.upload(bound.feeds(np.array([[101, 2023, 102]]), np.array([[1, 1, 1]])))
    assert all(type(v).__name__ == "OrtValue" for v in feeds.values())
