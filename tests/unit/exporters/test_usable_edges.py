"""Edges a user meets without a model: the int8 refusal lists its candidates and the way forward, a saved DatasetDict
needs its split, sample texts are the first non-empty ones."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.data import CorpusSpec
from lookalike.errors import InputError


def test_int8_refusal_lists_candidates_and_the_way_forward(tmp_path, monkeypatch):
    from lookalike.errors import ExportError
    from lookalike.exporters import int8

    def fake_rows(sess, feeds, output):  # every int8 candidate flips the labels of a classifier
        base = np.array([[1.0, 0.0], [0.0, 1.0]] * 4)
        return base if sess == "fp32" else base[:, ::-1]

    monkeypatch.setattr(int8, "_session", lambda p: "fp32" if p.name == "fp32.onnx" else "int8")
    monkeypatch.setattr(int8, "_rows", fake_rows)
    monkeypatch.setattr(int8, "quantize", lambda *a, **k: None)
    monkeypatch.setattr(int8, "measure", lambda paths, feeds, output, progress: progress(3 * len(paths)) or
                        {k: 100.0 for k in paths})
    fp32 = tmp_path / "fp32.onnx"
    fp32.write_bytes(b"0")
    with pytest.raises(ExportError) as e:
        int8.choose_scheme(fp32, "logits", [{"input_ids": np.zeros((8, 4))}], fused=False, config=None,
                           task="text-classification", use_cache=False)
    msg = str(e.value)
    assert "label agreement 0.0% (8 flips)" in msg and "--int8-scheme SCHEME" in msg and "dynamic-per-channel" in msg
    assert "of the 8 sample texts (at most 0 flips)" in msg  # the sample size and what the rule allows, said

    def one_flip(sess, feeds, output):  # 1 of 200 labels flips: within 99% (2 allowed), unlike 1 of 64 (0 allowed)
        base = np.array([[1.0, 0.0], [0.0, 1.0]] * 100)
        if sess != "fp32":
            base = base.copy()
            base[0] = base[0][::-1]
        return base

    monkeypatch.setattr(int8, "_rows", one_flip)
    bars = []

    class Bar:  # the scheme measurement shows a bar with an ETA: it must reach its total
        def __init__(self, enabled, total, unit, desc):
            self.total, self.n, self.desc = total, 0, desc
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def close(self):
            pass

    monkeypatch.setattr(int8, "progress_bar", Bar)
    report = int8.choose_scheme(fp32, "logits", [{"input_ids": np.zeros((200, 4))}], fused=False, config=None,
                                task="text-classification", use_cache=False)
    assert report["n_texts"] == 200 and report["flips_allowed"] == 2
    assert all(c["label_flips"] == 1 and c["ok"] for c in report["candidates"])
    (bar,) = bars
    assert bar.desc == "int8 schemes" and bar.n == bar.total == 5 * len(int8.SCHEMES) + 3


def test_a_saved_datasetdict_needs_its_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a", "b", "c"]}),
                               "test": datasets.Dataset.from_dict({"text": ["d"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match="splits train, test: say which with --split"):
        list(CorpusSpec(tmp_path / "dd").records())
    assert [r.text for r in CorpusSpec(tmp_path / "dd", split="train").records()] == ["a", "b", "c"]
    with pytest.raises(InputError, match="no split 'dev'"):
        list(CorpusSpec(tmp_path / "dd", split="dev").records())


def test_sample_texts_are_the_first_non_empty_ones(tmp_path):
    """`export --calibration FILE` reads its sample texts with CorpusSpec.sample_texts: non-empty, in file order."""
    (tmp_path / "c.txt").write_text("alpha\n\n   \nbeta\ngamma\ndelta\n")
    spec = CorpusSpec(tmp_path / "c.txt")
    assert spec.sample_texts(2) == ["alpha", "beta"]
    assert spec.sample_texts(1) == ["alpha"]  # reads at most 4 records: the blank ones count
    assert spec.sample_texts(10) == ["alpha", "beta", "gamma", "delta"]
