"""What `Embedder(...)` and `embed_to_store(...)` accept as a model: an export folder, or anything `lookalike
export` takes (a hub id, a sentence-transformers or Hugging Face folder, `minilm`), exported once on first use into
the shared cache ($LOOKALIKE_CACHE/exports/<key>) and reused.

A local folder's key is the sha256 of its files' names and contents, so an edited checkpoint gets a new export and
an unchanged one is never exported twice; a hub id's key is the id and revision (what the hub serves under that
name can change: pin a revision to pin the export). The export is written to a temporary folder and renamed into
place, so two processes exporting at once both end with one complete export.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..core.manifest import MANIFEST
from ..errors import ModelError
from ..files import cache_dir, sha256_file
from ..notes import NOTICE

log = logging.getLogger(__name__)


def is_export(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def source_key(source: str, revision: str | None = None) -> str:
    """Content key of a model source: its files' names and sha256 (a local folder), else its id and revision."""
    h = hashlib.sha256()
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                              p.relative_to(path).parts))
        if not files:
            raise ModelError(f"{path}: an empty folder is not a model")
        for p in files:
            h.update(str(p.relative_to(path)).encode() + b"\0" + sha256_file(p).encode() + b"\0")
    else:
        h.update(f"hub:{source}@{revision or 'main'}".encode())
    return h.hexdigest()[:16]


def export_for(model: str | Path, *, revision: str | None = None) -> Path:
    """The export folder for `model`: itself when it is one, else its cached feature-extraction export (made now
    when there is none)."""
    if is_export(model):
        return Path(model)
    from ..models import resolve_model

    source = resolve_model(str(model))
    folder = cache_dir() / "exports" / source_key(source, revision)
    if is_export(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.log(NOTICE, "%s: exporting to ONNX once, into %s (reused from now on)", model, folder)
    from ..exporters import export

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{os.getpid()}-", dir=folder.parent))
    try:
        export(source, tmp / "export", "feature-extraction", revision=revision)
        try:
            os.rename(tmp / "export", folder)
        except OSError:  # another process finished first: its export is the same
            if not is_export(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
