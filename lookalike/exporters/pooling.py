"""A model's own pooling, as sentence-transformers declares it (`modules.json`, `1_Pooling/config.json`, a
`Normalize` module), and the task a checkpoint was fine-tuned for (its `architectures`).

Read from the source model at export time and recorded in the export manifest (`sentence_transformers`), so
`embed --pooling auto` gives the model's own embeddings without the source at hand.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from ..core.heads import TASKS
from ..errors import ModelError
from ..core import pretrained

log = logging.getLogger(__name__)

# sentence-transformers Pooling config keys -> the pooled outputs lookalike's graphs have (or not)
_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
          "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len", "pooling_mode_weightedmean_tokens": "weightedmean",
          "pooling_mode_lasttoken": "lasttoken"}
SUPPORTED = ("cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken")  # graph.GRAPH_POOLINGS
# sentence-transformers >= 5 writes one "pooling_mode" name instead of the pooling_mode_* flags
_MODE_NAMES = {"cls": "cls", "mean": "mean", "max": "max", "mean_sqrt_len_tokens": "mean_sqrt_len",
               "weightedmean": "weightedmean", "lasttoken": "lasttoken"}


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


# the activations of a sentence-transformers Dense module lookalike applies after pooling (numpy, exactly)
DENSE_ACTIVATIONS = ("Identity", "Tanh", "ReLU", "Sigmoid")


def sentence_transformers_pooling(model: str, revision: str | None = None) -> dict | None:
    """Everything a sentence-transformers model's own embedding depends on, or None when it is not one:
    {"pooling", "normalize", "modules", "supported", "unsupported", "max_seq_length", "prompts",
    "default_prompt_name", "include_prompt", "dense"}.

    `max_seq_length` (sentence_bert_config.json) is the model's own max length; `prompts` and
    `default_prompt_name` (config_sentence_transformers.json) are prefixes such as e5's "query: "; `dense` lists
    the Dense modules after pooling ({"path", "in_features", "out_features", "bias", "activation"}), whose weights
    `read_dense` loads. `supported` is False when lookalike cannot reproduce the embedding exactly (another
    pooling mode, a module other than Transformer/Pooling/Dense/Normalize, a Dense activation it lacks)."""
    modules = _read(model, "modules.json", revision)
    if not isinstance(modules, list):
        return None
    mods = [m for m in modules if isinstance(m, dict)]
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in mods]
    pool_mod = next((m for m in mods if str(m.get("type", "")).endswith(".Pooling")), None)
    if pool_mod is None:
        return None
    cfg = _read(model, f"{pool_mod.get('path', '1_Pooling')}/config.json", revision) or {}
    modes = [v for k, v in _MODES.items() if cfg.get(k)]
    if not modes and isinstance(cfg.get("pooling_mode"), str):  # sentence-transformers >= 5.x: {"pooling_mode": "mean"}
        modes = [_MODE_NAMES.get(m.strip(), m.strip()) for m in cfg["pooling_mode"].split("+") if m.strip()]
    pooling = modes[0] if len(modes) == 1 else ("+".join(modes) or "unknown")
    unsupported = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize", "Dense")]
    dense = []
    for m, kind in zip(mods, kinds):
        if kind != "Dense":
            continue
        dcfg = _read(model, f"{m.get('path', '')}/config.json", revision) or {}
        act = str(dcfg.get("activation_function", "torch.nn.modules.activation.Tanh")).rsplit(".", 1)[-1]
        ok = all(isinstance(dcfg.get(k), int) for k in ("in_features", "out_features")) and act in DENSE_ACTIVATIONS
        if not ok:
            unsupported.append(f"Dense({act})")
        dense.append({"path": str(m.get("path", "")), "in_features": dcfg.get("in_features"),
                      "out_features": dcfg.get("out_features"), "bias": bool(dcfg.get("bias", True)),
                      "activation": act})
    if kinds.index("Pooling") > min((i for i, k in enumerate(kinds) if k == "Dense"), default=len(kinds)):
        unsupported.append("Dense before Pooling")
    bert = _read(model, "sentence_bert_config.json", revision) or {}
    st_cfg = _read(model, "config_sentence_transformers.json", revision) or {}
    prompts = st_cfg.get("prompts") if isinstance(st_cfg, dict) else None
    prompts = {str(k): v for k, v in prompts.items() if isinstance(v, str)} if isinstance(prompts, dict) else {}
    default_prompt = st_cfg.get("default_prompt_name") if isinstance(st_cfg, dict) else None
    max_seq = bert.get("max_seq_length") if isinstance(bert, dict) else None
    if max_seq is None:  # sentence-transformers >= 5 keeps it as the tokenizer's model_max_length
        tok_cfg = _read(model, "tokenizer_config.json", revision) or {}
        mml = tok_cfg.get("model_max_length") if isinstance(tok_cfg, dict) else None
        max_seq = mml if isinstance(mml, int) and mml <= 1 << 20 else None
    include_prompt = bool(cfg.get("include_prompt", True))
    if not include_prompt and prompts:
        unsupported.append("Pooling(include_prompt=False)")  # prompt tokens left out of the mean: not in the graph
    return {"pooling": pooling, "normalize": "Normalize" in kinds, "modules": kinds,
            "supported": pooling in SUPPORTED and not unsupported, "unsupported": unsupported,
            "max_seq_length": max_seq if isinstance(max_seq, int) and not isinstance(max_seq, bool) and max_seq > 1
            else None,
            "prompts": prompts, "default_prompt_name": default_prompt if default_prompt in prompts else None,
            "include_prompt": include_prompt, "dense": dense, "source": "modules.json"}


def read_dense(model: str, layer: dict, revision: str | None = None) -> dict[str, "np.ndarray"]:
    """{"weight": (out, in), "bias": (out,)} of one Dense module of a local sentence-transformers model, as float32."""
    import numpy as np

    folder = Path(model) / layer["path"]
    if not Path(model).exists():  # a hub id: the module's weights from the hub (or its local cache)
        from huggingface_hub import hf_hub_download

        for name in ("model.safetensors", "pytorch_model.bin"):
            try:
                folder = Path(hf_hub_download(model, f"{layer['path']}/{name}", revision=revision)).parent
                break
            except Exception:
                continue
    if (folder / "model.safetensors").is_file():
        from safetensors.numpy import load_file

        state = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        import torch

        state = {k: v.numpy() for k, v in torch.load(folder / "pytorch_model.bin", map_location="cpu",
                                                      weights_only=True).items()}
    else:
        raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin for its Dense module")
    out = {"weight": np.asarray(state["linear.weight"], dtype=np.float32)}
    if layer.get("bias", True):
        out["bias"] = np.asarray(state["linear.bias"], dtype=np.float32)
    if out["weight"].shape != (layer["out_features"], layer["in_features"]):
        raise ValueError(f"{folder}: Dense weight of shape {out['weight'].shape}, config says "
                         f"({layer['out_features']}, {layer['in_features']})")
    return out


def save_dense(model: str, st: dict, out_dir: Path, revision: str | None = None) -> None:
    """Write each Dense module's weights beside the ONNX model (`st_dense_<i>.npz`, listed and checksummed in
    the manifest like every file the runtime reads) and name the file in `st["dense"]`; a module whose weights
    cannot be read makes the model's own embedding unsupported (CLS under --pooling auto, with a warning)."""
    import numpy as np

    for i, layer in enumerate(st.get("dense") or []):
        try:
            w = read_dense(model, layer, revision)
        except Exception as exc:
            log.warning("%s: cannot read its Dense module %s (%s); --pooling auto will not reproduce it", model,
                        layer.get("path"), str(exc)[:160])
            st["supported"] = False
            st["unsupported"] = [*st.get("unsupported", []), f"Dense({layer.get('path')}: unreadable)"]
            continue
        name = f"st_dense_{i}.npz"
        np.savez(out_dir / name, **w)
        layer["file"] = name


def load_dense(model_dir: Path, st: dict) -> list[tuple[dict, dict]]:
    """The Dense modules an export recorded, as (layer config, weights) for `apply_dense`."""
    import numpy as np

    out = []
    for layer in st.get("dense") or []:
        with np.load(Path(model_dir) / layer["file"], allow_pickle=False) as z:
            w = {k: z[k].astype(np.float32) for k in z.files}
        if w["weight"].shape != (layer["out_features"], layer["in_features"]):
            raise ValueError(f"{layer['file']}: weight of shape {w['weight'].shape}")
        out.append((layer, w))
    return out


def apply_dense(x: "np.ndarray", layers: list[tuple[dict, dict]]) -> "np.ndarray":
    """x after each (layer config, weights) Dense module, in float32, as sentence-transformers computes it."""
    import numpy as np

    for layer, w in layers:
        x = x @ w["weight"].T
        if "bias" in w:
            x = x + w["bias"]
        act = layer["activation"]
        if act == "Tanh":
            x = np.tanh(x)
        elif act == "ReLU":
            x = np.maximum(x, 0)
        elif act == "Sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
        x = x.astype(np.float32, copy=False)
    return x


def infer_task(model: str, revision: str | None = None) -> tuple[str, str | None]:
    """(task, architecture it was inferred from): a fine-tuned checkpoint's head decides; else feature-extraction."""
    cfg = _read(model, "config.json", revision)
    if cfg is None and not Path(model).exists():
        try:
            cfg = pretrained.config(model, revision=revision).to_dict()
        except Exception:
            cfg = None
    for arch in (cfg or {}).get("architectures") or []:
        for task in TASKS.values():
            if task.head_suffix and str(arch).endswith(task.head_suffix):
                return task.name, arch
    archs = (cfg or {}).get("architectures") or []
    return "feature-extraction", (archs[0] if archs else None)


ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def write_st_folder(model: str, onnx_dir: Path, hidden_size: int, revision: str | None = None) -> list[str]:
    """Make the export folder load in sentence-transformers as is (`SentenceTransformer(folder, backend="onnx")`):
    the model's own modules (modules.json, its Pooling / Dense / Normalize folders, its configs) copied from the
    source, or, for a model without them, Transformer + CLS pooling (lookalike's default). The ONNX backend reads
    the graph where it is, `model.onnx` at the top (a second name for it under `onnx/` would make optimum warn that
    it found two). Returns the names written."""
    import shutil

    onnx_dir = Path(onnx_dir)
    written = []
    modules = _read(model, "modules.json", revision)
    local = Path(model)
    if isinstance(modules, list):
        for name in ST_FILES:
            cfg = _read(model, name, revision)
            if cfg is not None:
                (onnx_dir / name).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
                written.append(name)
        for m in modules:
            sub = m.get("path") if isinstance(m, dict) else None
            if not sub:
                continue
            if not plain_module_path(sub):
                raise ModelError(f"{model}: modules.json names the module folder {sub!r}, not a plain folder name")
            if local.exists():
                if (local / sub).is_dir():
                    shutil.copytree(local / sub, onnx_dir / sub, dirs_exist_ok=False)
            else:  # a hub id (online)
                from huggingface_hub import snapshot_download

                snap = Path(snapshot_download(model, revision=revision, allow_patterns=[f"{sub}/*"]))
                if (snap / sub).is_dir():
                    shutil.copytree(snap / sub, onnx_dir / sub)
            written.append(sub)
    else:
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        (onnx_dir / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
        (onnx_dir / "1_Pooling").mkdir()
        (onnx_dir / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": hidden_size, "pooling_mode_cls_token": True,
             "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
             "pooling_mode_mean_sqrt_len_tokens": False}, indent=2) + "\n", encoding="utf-8")
        written += ["modules.json", "1_Pooling"]
    return written


def plain_module_path(sub: str) -> bool:
    parts = Path(sub).parts
    return bool(parts) and not Path(sub).is_absolute() and all(x not in ("", ".", "..") for x in parts)


def reference_poolings(hidden, attention_mask) -> dict:
    """Every pooled output in numpy from the hidden states of right-padded rows, as sentence-transformers' Pooling
    computes it (the parity reference of each export's graph outputs)."""
    import numpy as np

    m = np.asarray(attention_mask).astype(np.float32)
    m3 = m[..., None]
    count = np.maximum(m.sum(1, keepdims=True), 1e-9)
    total = (hidden * m3).sum(1)
    pos = np.cumsum(m, 1) * m
    last = ((np.cumsum(m, 1) == m.sum(1, keepdims=True)) & (m > 0)).astype(np.float32)
    return {"cls": hidden[:, 0], "mean": total / count, "max": np.where(m3 > 0, hidden, -1e9).max(1),
            "mean_sqrt_len": total / np.sqrt(count), "weightedmean": (hidden * pos[..., None]).sum(1) /
            np.maximum(pos.sum(1, keepdims=True), 1e-9), "lasttoken": (hidden * last[..., None]).sum(1)}
