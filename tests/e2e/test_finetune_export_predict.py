"""A tiny model fine-tuned for QA, exported and predicting SQuAD v2 end to end, scored with the official semantics."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lookalike.cli import cli
from lookalike.data import read_corpus
from lookalike.errors import ModelError


@pytest.mark.slow
def test_finetune_export_predict_end_to_end(tiny_models, shared_data, tmp_path):
    from lookalike.data import CorpusSpec
    from lookalike.exporters import export
    from lookalike.finetune import finetune
    from lookalike.jobs import predict
    from lookalike.params import FinetuneParams

    ft = finetune("qa", str(tiny_models["qa"]), CorpusSpec(shared_data / "squad2_dev500", limit=24), tmp_path / "qa-ft",
                  FinetuneParams(max_steps=6, max_length=192, batch_size=8), progress=False)
    assert json.loads((ft / "lookalike-finetune.json").read_text())["n_records"] == 24
    export(str(ft), tmp_path / "qa-onnx", "question-answering")
    r = CliRunner().invoke(cli, ["predict", str(tmp_path / "qa-onnx"), str(shared_data / "squad2_dev500"),
                                 str(tmp_path / "qa-pred"), "--task", "qa", "--limit", "30", "--max-length", "192"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["total"] == 30 and "best_f1" in out and "HasAns_exact" in out
    preds = json.loads((tmp_path / "qa-pred" / "predictions.json").read_text())
    recs = {x.id: x for x in read_corpus(shared_data / "squad2_dev500", limit=30)}
    assert set(preds) == set(recs)
    assert all(p == "" or p in recs[q].text_pair for q, p in preds.items())  # spans come from the context
    r = CliRunner().invoke(cli, ["evaluate", str(shared_data / "squad2_dev500"),
                                 str(tmp_path / "qa-pred" / "predictions.json"), "--limit", "30"])
    assert r.exit_code == 0 and json.loads(r.output)["exact"] == out["exact"]

    ft = finetune("cls", str(tiny_models["cls"]), CorpusSpec(shared_data / "imdb" / "imdb_1k.tsv", limit=32),
                  tmp_path / "cls-ft", FinetuneParams(max_steps=4), progress=False)
    export(str(ft), tmp_path / "cls-onnx", "text-classification")
    info = predict(tmp_path / "cls-onnx", CorpusSpec(shared_data / "imdb" / "imdb_1k.tsv", limit=20),
                   tmp_path / "cls-pred", task="cls")
    assert info["n"] == 20
    with pytest.raises(ModelError, match="needs 'question-answering'"):
        predict(tmp_path / "cls-onnx", shared_data / "squad2_dev500", tmp_path / "x", task="qa")
