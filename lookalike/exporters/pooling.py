"""A model's own pooling, as sentence-transformers declares it (`modules.json`, `1_Pooling/config.json`, a
`Normalize` module), and the task a checkpoint was fine-tuned for (its `architectures`).

Read from the source model at export time and recorded in the export manifest (`sentence_transformers`), so
`embed --pooling auto` gives the model's own embeddings without the source at hand.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..core.tasks import TASKS

log = logging.getLogger(__name__)

# sentence-transformers Pooling config keys -> the pooled outputs lookalike's graphs have (or not)
_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
          "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len", "pooling_mode_weightedmean_tokens": "weightedmean",
          "pooling_mode_lasttoken": "lasttoken"}
SUPPORTED = ("cls", "mean")


def _read(model: str, name: str, revision: str | None = None) -> dict | list | None:
    local = Path(model)
    if local.exists():
        path = local / name
        if not path.is_file():
            return None
    else:  # a hub id: only where the hub can be reached (or the file is in the local hub cache)
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model, name, revision=revision))
        except Exception:
            return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("%s: unreadable (%s); ignoring the model's sentence-transformers pooling", path, exc)
        return None


def sentence_transformers_pooling(model: str, revision: str | None = None) -> dict | None:
    """{"pooling", "normalize", "modules", "supported", "unsupported"} from a sentence-transformers model, or None.

    `supported` is False when lookalike's graph cannot reproduce it exactly (another pooling mode, or modules
    after pooling such as Dense)."""
    modules = _read(model, "modules.json", revision)
    if not isinstance(modules, list):
        return None
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]
    pool_mod = next((m for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling")), None)
    if pool_mod is None:
        return None
    cfg = _read(model, f"{pool_mod.get('path', '1_Pooling')}/config.json", revision) or {}
    modes = [v for k, v in _MODES.items() if cfg.get(k)]
    pooling = modes[0] if len(modes) == 1 else ("+".join(modes) or "unknown")
    unsupported = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    return {"pooling": pooling, "normalize": "Normalize" in kinds, "modules": kinds,
            "supported": pooling in SUPPORTED and not unsupported, "unsupported": unsupported,
            "source": "modules.json"}


def infer_task(model: str, revision: str | None = None) -> tuple[str, str | None]:
    """(task, architecture it was inferred from): a fine-tuned checkpoint's head decides; else feature-extraction."""
    cfg = _read(model, "config.json", revision)
    if cfg is None and not Path(model).exists():
        try:
            import transformers

            cfg = transformers.AutoConfig.from_pretrained(model, revision=revision).to_dict()
        except Exception:
            cfg = None
    for arch in (cfg or {}).get("architectures") or []:
        for task in TASKS.values():
            if task.head_suffix and str(arch).endswith(task.head_suffix):
                return task.name, arch
    archs = (cfg or {}).get("architectures") or []
    return "feature-extraction", (archs[0] if archs else None)
