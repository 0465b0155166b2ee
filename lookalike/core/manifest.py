"""The export folder's contract: `lookalike.json` (the manifest) beside `model.onnx` and the tokenizer.

`load_manifest` validates what every reader relies on; the accessors turn stored JSON into typed values.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError, ModelError
from ..files import load_json, sha256_file
from .tasks import TASKS  # noqa: F401 (the tasks a manifest may name)

log = logging.getLogger(__name__)

MANIFEST = "lookalike.json"
MODEL_FILE = "model.onnx"
FORMAT_VERSION = 1
_REQUIRED = {"task": str, "file": str, "sha256": str, "hidden_size": int, "variant": dict, "source": dict}


def load_manifest(model_dir: str | Path, task: str | None = None, *, verify: bool = False) -> dict:
    """The manifest of an export folder; ModelError if the folder is not an export (or not for `task`).

    verify: check the model file's sha256 against the manifest (`verify_model_file`)."""
    model_dir = Path(model_dir)
    mpath = model_dir / MANIFEST
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: no such model folder")
    if not mpath.exists():
        raise ModelError(f"{model_dir}: not a lookalike export (no {MANIFEST}; make one with `lookalike export`)")
    try:
        manifest = load_json(mpath, "export manifest")
    except InputError as exc:
        raise ModelError(str(exc)) from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{mpath}: not an export manifest (expected a JSON object)")
    for key, typ in _REQUIRED.items():
        if not isinstance(manifest.get(key), typ):
            raise ModelError(f"{mpath}: field '{key}' missing or not a {typ.__name__}; re-export the model")
    if not (model_dir / manifest["file"]).exists():
        raise ModelError(f"{model_dir}: manifest names {manifest['file']} but it is missing")
    if verify:
        verify_model_file(model_dir, manifest)
    if task is not None and manifest["task"] != task:
        raise ModelError(f"{model_dir}: exported for task {manifest['task']!r}, this command needs {task!r} "
                         f"(re-export with --task {task})")
    return manifest


_VERIFIED: dict = {}


def verify_model_file(model_dir: str | Path, manifest: dict) -> None:
    """ModelError unless the model file's sha256 is the manifest's: every artifact made with the model is labelled
    with that hash. Cached in this process per (path, size, mtime, inode), so a model loaded twice is hashed once;
    any rewrite changes the mtime and is hashed again."""
    path = Path(model_dir) / manifest["file"]
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, manifest["sha256"])
    if key in _VERIFIED:
        return
    if sha256_file(path) != manifest["sha256"]:
        raise ModelError(f"{path}: its sha256 is not the one {MANIFEST} records (the file was changed or replaced "
                         "after export); re-export the model")
    _VERIFIED[key] = True


def labels(manifest: dict) -> dict[int, str]:
    """{label id: name} of a classification export ({} for other tasks)."""
    return {int(k): v for k, v in (manifest.get("labels") or {}).items()}


def positions(manifest: dict) -> int:
    """The model's position embeddings: the longest input it reads (512 when the export does not say)."""
    return int(manifest.get("max_position_embeddings") or 512)


def clamp_length(manifest: dict, max_length: int, *, warn: bool = False) -> int:
    """`max_length` cut to the model's positions (with a warning when asked and it had to be cut)."""
    n = positions(manifest)
    if warn and max_length > n:
        log.warning("max length %d is more than the model's %d positions; using %d", max_length, n, n)
    return min(max_length, n)


def describe_int8(record: dict) -> str:
    """One line about an export's int8 choice (its manifest's `int8` record), for `export` and `bench`."""
    if not record.get("measured", True):
        return f"int8 {record['scheme']} (given explicitly, not measured at export)"
    verdict = (f"{record['speedup']:.2f}x fp32" if record["faster_than_fp32"]
               else f"NOT faster than fp32 here ({record['speedup']:.2f}x)")
    return (f"int8 {record['scheme']} on {record['cpu']} ({record['int8_class']}): {verdict}, cosine vs fp32 "
            f"{record['cosine']:.4f}")
