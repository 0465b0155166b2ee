"""finetune is as safe as embed: the folder is keyed on the whole recipe, so a re-run with another learning rate or
task is refused in one line instead of resuming the old weights and rewriting their record; the same recipe
finished does nothing; --overwrite removes only what finetune wrote; checkpoints go once the final weights are
saved; a classifier that did not learn is said."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
from click.testing import CliRunner

from lookalike.cli import cli


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture()
def reviews(shared_data, tmp_path):
    return str(shared_data / "imdb" / "imdb_1k.tsv")


def _ft(model, data, out, *extra):
    return CliRunner().invoke(cli, ["finetune", str(model), data, str(out), "--task", "cls", "--max-steps", "2",
                                    "--max-length", "32", "--batch-size", "4", "--limit", "16", *extra])


def test_another_recipe_is_refused_and_the_record_kept(tiny_models, reviews, tmp_path):
    out = tmp_path / "ft"
    r = _ft(tiny_models["cls"], reviews, out, "--learning-rate", "2e-5")
    assert r.exit_code == 0, r.output
    info = json.loads((out / "lookalike-finetune.json").read_text())
    weights, record = _sha(out / "model.safetensors"), _sha(out / "lookalike-finetune.json")
    assert info["learning_rate"] == 2e-5 and info["recipe"]["learning_rate"] == 2e-5
    assert not (out / "checkpoints").exists()  # only the final weights are kept by default
    assert "accuracy_training_sample" in info and info["n_scored"] == 16

    r = _ft(tiny_models["cls"], reviews, out, "--learning-rate", "1e-4")  # another recipe
    assert r.exit_code != 0 and "another recipe" in r.output and "learning_rate" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert _sha(out / "model.safetensors") == weights and _sha(out / "lookalike-finetune.json") == record

    r = CliRunner().invoke(cli, ["finetune", str(tiny_models["qa"]), str(reviews), str(out), "--task", "qa",
                                 "--max-steps", "1"])  # another task into the same folder: one line, no optimizer
    assert r.exit_code != 0 and "another recipe" in r.output and "Traceback" not in r.output

    r = _ft(tiny_models["cls"], reviews, out, "--learning-rate", "2e-5")  # the same recipe: nothing to do
    assert r.exit_code == 0 and _sha(out / "model.safetensors") == weights
    assert _sha(out / "lookalike-finetune.json") == record

    (out / "my-notes.txt").write_text("mine")
    r = _ft(tiny_models["cls"], reviews, out, "--learning-rate", "1e-4", "--overwrite")
    assert r.exit_code != 0 and "my-notes.txt" in r.output  # --overwrite deletes nothing when a user's file is there
    (out / "my-notes.txt").unlink()
    r = _ft(tiny_models["cls"], reviews, out, "--learning-rate", "1e-4", "--overwrite")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "lookalike-finetune.json").read_text())["learning_rate"] == 1e-4
    assert _sha(out / "model.safetensors") != weights


def test_a_classifier_that_did_not_learn_is_said(tiny_models, shared_data, tmp_path, caplog):
    from lookalike.data import CorpusSpec
    from lookalike.finetune import finetune
    from lookalike.params import FinetuneParams

    data = CorpusSpec(shared_data / "imdb" / "imdb_1k.tsv", limit=40)
    with caplog.at_level(logging.WARNING):
        out = finetune("cls", str(tiny_models["cls"]), data, tmp_path / "ft",
                       FinetuneParams(max_steps=1, learning_rate=1e-9, max_length=32, batch_size=4), progress=False,
                       eval_data=CorpusSpec(shared_data / "imdb" / "imdb_1k.tsv", every=7, limit=60))
    info = json.loads((out / "lookalike-finetune.json").read_text())
    assert info["n_scored"] == 60 and "accuracy_held_out" in info
    said = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    # an untrained random classifier (a learning rate of 1e-9) gives one class for everything
    assert max(info["predicted_labels"].values()) >= 57 and "collapsed onto one class" in said
