"""Exports checked against PyTorch with an independent computation, loaded by a plain InferenceSession."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from support import _feeds, _ort

from lookalike.errors import ExportError, ModelError
from lookalike.exporters import export, load_manifest

TEXTS = ["hello world", "a considerably longer sentence about compressed models and their large teachers", "x"]


def test_feature_extraction_parity(tiny_models, tiny_exports):
    src, out = tiny_models["bert2"], tiny_exports["bert2"]
    m = load_manifest(out, "feature-extraction")
    assert m["parity"]["passed"] and m["parity"]["max_abs_diff"] < 1e-4
    assert {"input_ids", "attention_mask"} <= set(m["inputs"]) and {"cls", "mean", "last_hidden_state"} <= set(m["outputs"])
    assert m["num_layers"] == 2 and m["hidden_size"] == 32 and len(m["sha256"]) == 64
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ref_model = transformers.AutoModel.from_pretrained(src).eval()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**enc).last_hidden_state.numpy()
    sess = _ort(out)
    cls, mean, lhs = sess.run(["cls", "mean", "last_hidden_state"], _feeds(sess, enc))
    np.testing.assert_allclose(cls, hidden[:, 0], atol=1e-4)
    mask = enc["attention_mask"].numpy()[..., None]
    np.testing.assert_allclose(mean, (hidden * mask).sum(1) / mask.sum(1), atol=1e-4)
    np.testing.assert_allclose(lhs[mask[..., 0] == 1], hidden[mask[..., 0] == 1], atol=1e-4)


def test_qa_and_classification_parity(tiny_models, tiny_exports):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_exports["qa"])
    enc = tok(["who?", "what is it?"], ["it is a cat", "nobody knows who did it, really"], padding=True,
              return_tensors="pt")
    ref = transformers.AutoModelForQuestionAnswering.from_pretrained(tiny_models["qa"]).eval()
    with torch.no_grad():
        out = ref(**enc)
    sess = _ort(tiny_exports["qa"])
    start, end = sess.run(["start_logits", "end_logits"], _feeds(sess, enc))
    m = enc["attention_mask"].numpy() == 1
    np.testing.assert_allclose(start[m], out.start_logits.numpy()[m], atol=1e-4)
    np.testing.assert_allclose(end[m], out.end_logits.numpy()[m], atol=1e-4)

    manifest = load_manifest(tiny_exports["cls"], "text-classification")
    assert manifest["labels"] == {"0": "negative", "1": "positive"} or manifest["labels"] == {0: "negative", 1: "positive"}
    ref = transformers.AutoModelForSequenceClassification.from_pretrained(tiny_models["cls"]).eval()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = ref(**enc).logits.numpy()
    sess = _ort(tiny_exports["cls"])
    np.testing.assert_allclose(sess.run(["logits"], _feeds(sess, enc))[0], logits, atol=1e-4)


def test_variants_int8_and_layer_drop(tiny_models, tmp_path):
    src = tiny_models["bert4"]
    fp32 = export(str(src), tmp_path / "fp32")
    int8 = export(str(src), tmp_path / "int8", quantize="int8", per_channel=True)
    dropped = export(str(src), tmp_path / "l02", keep_layers=[0, 2])
    assert int8["file_size"] < fp32["file_size"] / 2
    assert dropped["file_size"] < fp32["file_size"] and dropped["num_layers"] == 2
    assert dropped["parameters"] < fp32["parameters"]
    assert 0.5 < int8["variant_parity"]["mean_cosine_cls"] <= 1.0001
    assert int8["variant"]["description"] == "int8 dynamic per-channel, ORT-fused"
    # independent reference for layer dropping: rebuild the pruned encoder by hand
    tok = transformers.AutoTokenizer.from_pretrained(src)
    model = transformers.AutoModel.from_pretrained(src).eval()
    model.encoder.layer = torch.nn.ModuleList([model.encoder.layer[0], model.encoder.layer[2]])
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        cls_ref = model(**enc).last_hidden_state[:, 0].numpy()
    sess = _ort(tmp_path / "l02")
    np.testing.assert_allclose(sess.run(["cls"], _feeds(sess, enc))[0], cls_ref, atol=1e-4)
    sess = _ort(tmp_path / "int8")
    assert sess.run(["cls"], _feeds(sess, enc))[0].shape == cls_ref.shape


def _op_types(path):
    import onnx

    return {n.op_type for n in onnx.load(str(path / "model.onnx"), load_external_data=False).graph.node}


def test_fusion_default_and_fallback(tiny_models, tiny_exports, tmp_path, monkeypatch, caplog):
    # default: exports carry ORT's fused ops (and passed parity), int8 too; --no-optimize the plain graph
    m = load_manifest(tiny_exports["bert2"])
    assert m["variant"]["optimized"] and m["variant"]["description"] == "fp32, ORT-fused"
    ops = _op_types(tiny_exports["bert2"])
    assert {"Attention", "BiasGelu"} <= ops and "SkipLayerNormalization" not in ops
    # (the scheme pinned: `auto` picks by timing on this CPU, and only the dynamic schemes fuse into QAttention)
    q = export(str(tiny_models["bert2"]), tmp_path / "int8", quantize="int8", int8_scheme="dynamic-per-channel")
    assert q["variant"]["optimized"] and "QAttention" in _op_types(tmp_path / "int8")
    plain = export(str(tiny_models["bert2"]), tmp_path / "plain", optimize=False)
    assert not plain["variant"]["optimized"] and plain["variant"]["description"] == "fp32"
    assert "Attention" not in _op_types(tmp_path / "plain")

    # the fused Attention takes the raw mask: left padding and holes give what the plain graph gives
    fused, ref = _ort(tiny_exports["bert2"]), _ort(tmp_path / "plain")
    ids = np.array([[0, 0, 101, 2000, 2001, 2002, 102], [101, 2003, 2004, 2005, 2006, 2007, 102]])
    for mask in ([[0, 0, 1, 1, 1, 1, 1], [1] * 7], [[1, 1, 0, 1, 1, 0, 1], [1] * 7], [[1] * 5 + [0, 0], [1] * 7]):
        feeds = {"input_ids": ids, "attention_mask": np.array(mask), "token_type_ids": np.zeros_like(ids)}
        for a, b in zip(fused.run(["cls", "mean"], feeds), ref.run(["cls", "mean"], feeds)):
            np.testing.assert_allclose(a, b, atol=1e-5)

    # a fusion that breaks the graph: the default falls back to the plain graph and says so ...
    from lookalike.exporters import graph

    real = graph.optimize_transformer

    def broken(path, config, target="cpu"):
        import onnx
        from onnx import numpy_helper

        real(path, config, target)
        model = onnx.load(str(path))
        for init in model.graph.initializer:
            if init.name.endswith("qkv_bias"):
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 1.0, init.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(graph, "optimize_transformer", broken)
    with caplog.at_level("WARNING"):
        fb = export(str(tiny_models["bert2"]), tmp_path / "fallback")
    assert not fb["variant"]["optimized"] and fb["parity"]["passed"]
    assert "Attention" not in _op_types(tmp_path / "fallback") and "ORT fusions skipped" in caplog.text
    assert sorted(p.name for p in (tmp_path / "fallback").glob("*.onnx")) == ["model.onnx"]
    # ... while an explicit --optimize fails loudly
    with pytest.raises(ExportError, match="parity check failed"):
        export(str(tiny_models["bert2"]), tmp_path / "forced", optimize=True)
    monkeypatch.setattr(graph, "optimize_transformer", lambda path, config, target="cpu": 1 / 0)
    with pytest.raises(ExportError, match="fusions failed.*ZeroDivisionError"):
        export(str(tiny_models["bert2"]), tmp_path / "raises", optimize=True)


def test_distilbert(tiny_models, tmp_path):
    d = export(str(tiny_models["distil"]), tmp_path / "distil", keep_layers=[0, 2])
    assert d["num_layers"] == 2 and d["parity"]["passed"]
    assert "token_type_ids" not in d["inputs"]


def test_bad_inputs(tiny_models, tiny_exports, tmp_path):
    with pytest.raises(ExportError, match="unknown task"):
        export(str(tiny_models["bert2"]), tmp_path / "x", "summarization")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a lookalike export"):
        export(str(tiny_models["bert2"]), tmp_path / "taken")
    with pytest.raises(ExportError, match="--overwrite"):
        export(str(tiny_models["bert2"]), tiny_exports["bert2"])
    with pytest.raises(ModelError, match="keep-layers"):
        export(str(tiny_models["bert2"]), tmp_path / "y", keep_layers=[0, 5])
    with pytest.raises(ModelError, match="not a lookalike export"):
        load_manifest(tiny_models["bert2"])
    with pytest.raises(ModelError, match="needs 'question-answering'"):
        load_manifest(tiny_exports["bert2"], "question-answering")
    assert not list(tmp_path.glob(".*tmp-*"))  # failed exports leave nothing half-written


def test_int8_scheme_is_measured_on_this_cpu_and_recorded(tiny_models, tmp_path, monkeypatch):
    """--quantize int8 (auto): every scheme built and timed against fp32 here; the fastest within cosine 0.99
    is kept; the manifest names it, the CPU and ISA; an independent ONNX Runtime run confirms its cosine."""
    import onnxruntime as ort
    import transformers

    from lookalike.core.cpu import cpu_info
    from lookalike.data.stdlib import stdlib_corpora
    from lookalike.errors import ExportError
    from lookalike.exporters.int8 import SCHEMES

    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    fp32 = export(str(tiny_models["bert4"]), tmp_path / "fp32")
    q = export(str(tiny_models["bert4"]), tmp_path / "q", quantize="int8")
    rep = q["int8"]
    assert [c["scheme"] for c in rep["candidates"]] == list(SCHEMES)
    assert rep["cpu"] == cpu_info()["model"] and rep["isa"] == cpu_info()["isa"]
    ok = [c for c in rep["candidates"] if c["ok"]]
    assert rep["scheme"] == max(ok, key=lambda c: c["speedup"])["scheme"] and rep["cosine"] >= 0.99
    assert all(c["ok"] == (c["cosine"] >= 0.99) for c in rep["candidates"] if "cosine" in c)
    assert rep["faster_than_fp32"] == (rep["speedup"] > 1.05)
    assert q["variant"]["int8_scheme"] == rep["scheme"] and "int8" in q["variant"]["description"]
    # independent check of the recorded cosine: both exports through plain ONNX Runtime sessions
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "fp32")
    texts = [d["text"] for d in stdlib_corpora(64, 0)[0]]
    cosines = {}
    for output in ("cls", "mean"):  # an embedder is judged on every pooling it offers: the worst is recorded
        outs = []
        for name in ("fp32", "q"):
            sess = ort.InferenceSession(str(tmp_path / name / "model.onnx"), providers=["CPUExecutionProvider"])
            rows = []
            for i in range(0, 64, 8):
                enc = tok(texts[i:i + 8], padding=True, truncation=True, max_length=128, return_tensors="np")
                rows.append(sess.run([output], {k: v.astype(np.int64) for k, v in enc.items()})[0])
            outs.append(np.concatenate(rows))
        a, b = outs
        cosines[output] = ((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean()
    assert rep["judged_on"] == ["cls", "mean"] and rep["n_texts"] == 64
    assert min(cosines.values()) == pytest.approx(rep["cosine"], abs=2e-3)
    # the choice is cached per CPU and model shape: a same-shaped export reuses it
    again = export(str(tiny_models["bert4"]), tmp_path / "q2", quantize="int8")
    assert again["int8"]["scheme"] == rep["scheme"] and "from_cache" in again["int8"]
    explicit = export(str(tiny_models["bert4"]), tmp_path / "rr", quantize="int8", int8_scheme="dynamic-reduce-range")
    assert explicit["int8"]["measured"] is False and "reduce-range" in explicit["variant"]["description"]
    with pytest.raises(ExportError, match="unknown int8 scheme"):
        export(str(tiny_models["bert4"]), tmp_path / "x", quantize="int8", int8_scheme="int4")
    assert fp32["variant"]["int8_scheme"] is None
