"""What `Embedder(...)` and `embed_to_store(...)` accept as a model: an export folder, or anything `lookalike
export` takes (a hub id, a sentence-transformers or Hugging Face folder, `minilm`), exported once on first use into
the shared cache ($LOOKALIKE_CACHE/exports/<key>) and reused.

A local folder's key is the sha256 of its files' names and contents, so an edited checkpoint gets a new export and
an unchanged one is never exported twice; a hub id's key is the id and revision (what the hub serves under that
name can change: pin a revision to pin the export). The export is written to a temporary folder and renamed into
place, so two processes exporting at once both end with one complete export.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..core.manifest import MANIFEST, load_manifest
from ..errors import InputError, ModelError
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


CACHE_RECORD = ".lookalike-cache.json"  # inside an entry: what it was exported from, and the model it holds
CACHE_KIND = "lookalike.export-cache"


def _record(folder: Path) -> dict | None:
    try:
        r = json.loads((folder / CACHE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return r if isinstance(r, dict) and r.get("kind") == CACHE_KIND else None


def entry_problem(folder: Path, source: str, key: str) -> str | None:
    """Why the cache entry at `folder` is not the export of `source` it is named for, or None: its record must name
    this key and source, and every file must verify against its manifest, whose model hash must be the recorded
    one (a swapped, planted, truncated or edited entry is caught)."""
    record = _record(folder)
    if record is None:
        return f"it has no readable {CACHE_RECORD} (not made by this lookalike)"
    if record.get("key") != key or record.get("source") != source:
        return f"it records the export of {record.get('source')!r} (key {record.get('key')!r}), not of {source!r}"
    try:
        manifest = load_manifest(folder, verify=True)
    except (ModelError, InputError) as exc:
        return str(exc)
    if manifest.sha256 != record.get("model_sha256") or manifest.source_model != source:
        return "its model is not the one it was exported with"
    return None


def _adopt(folder: Path, source: str, key: str) -> bool:
    """An entry an earlier lookalike made before entries carried a record: used (and given its record) only when
    every file verifies against its manifest and the manifest names this very source; else False."""
    if (folder / CACHE_RECORD).exists():
        return False
    try:
        manifest = load_manifest(folder, verify=True)
    except (ModelError, InputError):
        return False
    if manifest.source_model != source:
        return False
    (folder / CACHE_RECORD).write_text(json.dumps({"kind": CACHE_KIND, "key": key, "source": source,
                                                  "model_sha256": manifest.sha256, "adopted": True}, indent=1) + "\n")
    return entry_problem(folder, source, key) is None


@contextlib.contextmanager
def _entry_lock(folder: Path):
    """One process makes or repairs an entry at a time (others wait, then find it made)."""
    import fcntl

    fd = os.open(cache_dir("locks") / f"export-{folder.name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def export_for(model: str | Path, *, revision: str | None = None) -> Path:
    """The export folder for `model`: itself when it is one, else its cached feature-extraction export (made now
    when there is none).

    A cache entry is used only when it verifies (`entry_problem`). One lookalike made that is damaged is rebuilt,
    under a lock; one it did not make is refused in one line naming it, never used and never deleted."""
    if is_export(model):
        return Path(model)
    from ..models import resolve_model

    source = resolve_model(str(model))
    key = source_key(source, revision)
    folder = cache_dir("exports") / key
    with _entry_lock(folder):
        if folder.exists() or folder.is_symlink():
            problem = entry_problem(folder, source, key) if folder.is_dir() and not folder.is_symlink() \
                else "it is not a folder"
            if problem is None:
                return folder
            record = _record(folder) if folder.is_dir() and not folder.is_symlink() else None
            if record is None and folder.is_dir() and not folder.is_symlink() and _adopt(folder, source, key):
                return folder  # made by an earlier lookalike (no record yet): verified whole, then recorded
            if record is None or record.get("key") != key:
                raise ModelError(f"{folder}: a cache entry lookalike did not make ({problem}); lookalike will neither "
                                 "use nor delete it: move it away and re-run")
            log.warning("%s: the cached export is damaged (%s); exporting it again", folder, problem)
            shutil.rmtree(folder)
        log.log(NOTICE, "%s: exporting to ONNX once, into %s (reused from now on)", model, folder)
        from ..exporters import export

        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{os.getpid()}-", dir=folder.parent))
        try:
            manifest = export(source, tmp / "export", "feature-extraction", revision=revision)
            (tmp / "export" / CACHE_RECORD).write_text(json.dumps(
                {"kind": CACHE_KIND, "key": key, "source": source, "revision": revision,
                 "model_sha256": manifest["sha256"]}, indent=1) + "\n")
            os.rename(tmp / "export", folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
