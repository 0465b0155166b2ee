"""No code runs that the user did not choose: a model folder that ships Python (`auto_map` in its config.json or
tokenizer_config.json) is refused in one line by every loading path, and its code never runs, whatever standard
input holds ("y" is what transformers' trust prompt would take as consent).

Each folder's payload writes a marker file when imported; the test checks the marker never appears."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lookalike.cli import cli

PAYLOAD = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import BertConfig, BertModel, BertForMaskedLM, BertForSequenceClassification, BertTokenizerFast
class EvilConfig(BertConfig):
    model_type = "evil-bert"
class EvilModel(BertModel):
    config_class = EvilConfig
class EvilMLM(BertForMaskedLM):
    config_class = EvilConfig
class EvilCls(BertForSequenceClassification):
    config_class = EvilConfig
class EvilTokenizer(BertTokenizerFast):
    pass
"""


def _evil(root: Path, source: Path, where: str) -> tuple[Path, Path]:
    """A copy of a tiny real BERT folder that declares custom code in `where` ("config" or "tokenizer")."""
    folder = root / f"evil-{where}-{source.name}"
    shutil.copytree(source, folder)
    marker = root / f"ran-{where}-{source.name}"
    (folder / "evil_code.py").write_text(PAYLOAD.format(marker=str(marker)))
    if where == "config":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["auto_map"] = {"AutoConfig": "evil_code.EvilConfig", "AutoModel": "evil_code.EvilModel",
                           "AutoModelForMaskedLM": "evil_code.EvilMLM",
                           "AutoModelForSequenceClassification": "evil_code.EvilCls"}
        cfg["model_type"] = "evil-bert"  # unknown to transformers: only the folder's code could load it
        (folder / "config.json").write_text(json.dumps(cfg))
    else:
        tc = json.loads((folder / "tokenizer_config.json").read_text())
        tc["auto_map"] = {"AutoTokenizer": [None, "evil_code.EvilTokenizer"]}
        tc["tokenizer_class"] = "EvilTokenizer"
        (folder / "tokenizer_config.json").write_text(json.dumps(tc))
    return folder, marker


@pytest.fixture
def evil_root(tmp_path):
    return tmp_path


def _refused(r, marker: Path, folder: Path):
    assert not marker.exists(), "the model folder's code ran"
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "auto_map" in r.stderr and "never runs code" in r.stderr, r.stderr
    assert "custom code" not in r.stdout.lower()  # no prompt was printed


@pytest.mark.parametrize("where", ["config", "tokenizer"])
def test_export_refuses_a_folder_with_code(evil_root, tiny_models, tmp_path, where):
    folder, marker = _evil(evil_root, tiny_models["bert2"], where)
    r = CliRunner().invoke(cli, ["export", str(folder), str(tmp_path / "out")], input="y\ny\ny\n")
    _refused(r, marker, folder)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("where", ["config", "tokenizer"])
def test_finetune_refuses_a_folder_with_code(evil_root, tiny_models, tmp_path, shared_data, where):
    folder, marker = _evil(evil_root, tiny_models["cls"], where)
    r = CliRunner().invoke(cli, ["finetune", str(folder), str(shared_data / "imdb" / "imdb_1k.tsv"),
                                 str(tmp_path / "ft"), "--task", "cls", "--limit", "8", "--epochs", "1",
                                 "--max-length", "32"], input="y\ny\ny\n")
    _refused(r, marker, folder)


@pytest.mark.parametrize("where", ["config", "tokenizer"])
def test_fit_mlm_refuses_a_folder_with_code(evil_root, tiny_models, tmp_path, shared_data, where):
    folder, marker = _evil(evil_root, tiny_models["bert2"], where)
    r = CliRunner().invoke(cli, ["fit-mlm", str(folder), str(shared_data / "imdb" / "imdb_1k.tsv"),
                                 str(tmp_path / "mlm"), "--limit", "8"], input="y\ny\ny\n")
    _refused(r, marker, folder)


@pytest.mark.parametrize("where", ["config", "tokenizer"])
def test_attack_refuses_an_mlm_with_code(evil_root, tiny_models, tmp_path, tiny_exports, shared_data, where):
    folder, marker = _evil(evil_root, tiny_models["mlm"], where)
    r = CliRunner().invoke(cli, ["attack", str(tiny_exports["cls"]), str(shared_data / "imdb" / "imdb_1k.tsv"),
                                 str(tmp_path / "att"), "--mlm", str(folder), "--limit", "2"], input="y\ny\ny\n")
    _refused(r, marker, folder)


@pytest.mark.parametrize("where", ["config", "tokenizer"])
def test_embedder_refuses_a_non_export_with_code(evil_root, tiny_models, where, monkeypatch):
    from lookalike import Embedder
    from lookalike.errors import ModelError

    folder, marker = _evil(evil_root, tiny_models["bert2"], where)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("y\ny\ny\n"))
    with pytest.raises(ModelError, match="auto_map"):
        Embedder(str(folder)).encode(["a text"])
    assert not marker.exists()


def test_an_export_whose_tokenizer_config_was_given_code_is_refused(evil_root, tiny_exports, tmp_path, monkeypatch):
    """An export folder edited to declare a tokenizer class of its own: refused (its files no longer match the
    export's manifest) rather than run."""
    from lookalike.engine.runtime import OnnxModel
    from lookalike.errors import ModelError

    folder = tmp_path / "export"
    shutil.copytree(tiny_exports["cls"], folder)
    marker = tmp_path / "ran"
    (folder / "evil_code.py").write_text(PAYLOAD.format(marker=str(marker)))
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    tc["auto_map"] = {"AutoTokenizer": [None, "evil_code.EvilTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("y\n"))
    with pytest.raises(ModelError, match="sha256|auto_map"):
        _ = OnnxModel(folder, device="cpu").tokenizer
    assert not marker.exists()
