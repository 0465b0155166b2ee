"""Sharded, resumable, checksummed HDF5 folders: the one writer under the embedding store and the token cache.

A folder holds `<prefix>-NNNNN.h5` shards (rows in corpus order, boundaries at fixed multiples of `shard_rows`),
a `manifest.json` listing them with row ranges and sha256, and `.lookalike.lock`, held by its one writer.
Every file is written under a temporary name unique to its writer, fsynced, renamed, and the folder fsynced;
the manifest is replaced atomically after the shard it lists, so a crash leaves the old state or the new one.
A writer only ever removes files whose names the format owns (its shards, manifest, entry files and their
temporaries), refuses a folder that holds anything else, and writes no manifest before its first shard (a
run that fails early leaves nothing behind). On resume every recorded shard is checked again; the first bad
one and all after it are redone.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError, StoreError
from ..files import (
    WriterLock,
    atomic_write_json,
    fsync_dir,
    is_no_space,
    json_of_kind,
    load_json,
    owned_tmp,
    refuse_other_settings,
    sha256_file,
    utc_now,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# shards recorded since the manifest was last written, one JSON line each (fsynced): appending a shard costs O(1)
# whatever the number of shards; the journal is folded into the manifest when it grows as long as the manifest's
# own list (amortised O(1) per shard) and when the folder is finalised
JOURNAL = "manifest.journal"


class ShardFormat:
    """What a kind of sharded folder stores; subclasses say how a shard is written and checked."""

    kind = "lookalike.shards"
    noun = "sharded folder"
    version = 1
    prefix = "part"
    entry_files: tuple[str, ...] = ()  # extra files written at finalize (owned names)
    provenance: tuple[str, ...] = ()  # config keys recorded but not part of the folder's identity
    repair = "re-run the command that made it"

    def __init__(self, config: dict):
        self.config = config

    @property
    def owned(self) -> re.Pattern:
        names = [rf"{self.prefix}-\d{{5}}\.h5", re.escape(MANIFEST), re.escape(JOURNAL),
                 *(re.escape(f) for f in self.entry_files)]
        return re.compile("|".join(names))

    @classmethod
    def shard_name(cls, index: int) -> str:
        return f"{cls.prefix}-{index:05d}.h5"

    def manifest_fields(self) -> dict:
        return {}

    def write_shard(self, folder: Path, index: int, start: int, columns: dict) -> dict:
        raise NotImplementedError

    def check_shard(self, folder: Path, entry: dict, manifest: dict) -> str | None:
        raise NotImplementedError

    def finalize(self, folder: Path, manifest: dict) -> None:
        pass

    def first_problem(self, folder: Path, manifest: dict) -> tuple[int, str] | None:
        """(position, why) of the first listed shard that does not match the manifest, or None. Shards are
        checked in parallel (sha256 releases the GIL); the problem reported is the first in shard order."""
        shards = manifest["shards"]
        if not shards:
            return None
        with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1, len(shards)))) as pool:
            problems = list(pool.map(lambda entry: self.check_shard(folder, entry, manifest), shards))
        return next(((i, why) for i, why in enumerate(problems) if why), None)

    def identity(self, config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in self.provenance}


def read_manifest(folder: Path, fmt: type[ShardFormat]) -> dict:
    mpath = folder / MANIFEST
    try:
        manifest = load_json(mpath, "manifest")
    except InputError as exc:
        raise StoreError(f"{exc}; {fmt.repair}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list) \
            or not isinstance(manifest.get("config"), dict):
        raise StoreError(f"{mpath}: not a lookalike manifest (fields config, shards)")
    kind = manifest.get("kind", "lookalike.store")
    if kind != fmt.kind:
        raise StoreError(f"{folder}: holds a {kind} folder, not a {fmt.noun}")
    if manifest.get("format_version", fmt.version) > fmt.version:
        raise StoreError(f"{mpath}: format {manifest['format_version']} is newer than this lookalike understands "
                         f"({fmt.version}); upgrade lookalike")
    problem = _merge_journal(folder, manifest) or chain_problem(manifest, fmt)
    if problem:
        raise StoreError(f"{mpath}: {problem}; the manifest is damaged (edited by hand?): delete the folder and "
                         f"{fmt.repair.split(' (')[0]}")
    return manifest


def _merge_journal(folder: Path, manifest: dict) -> str | None:
    """Append the journal's shard entries to `manifest` (in place); why it does not continue the manifest, or
    None. A torn last line (a kill while it was written) is a shard never recorded: it is left out. Entries the
    manifest already lists (a kill after the journal was folded in, before it was removed) are skipped."""
    path = folder / JOURNAL
    if not path.is_file() or path.is_symlink():
        return None if not path.is_symlink() else f"{JOURNAL} is a symbolic link"
    shards = manifest["shards"]
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            if n == len(lines) - 1:  # torn last line: never recorded
                break
            return f"{JOURNAL} line {n + 1} is not JSON"
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), int):
            return f"{JOURNAL} line {n + 1} is not a shard entry"
        index = entry.pop("index")
        if index < len(shards):
            if shards[index] != entry:
                return f"{JOURNAL} line {n + 1} contradicts the manifest's shard {index}"
        elif index == len(shards):
            shards.append(entry)
            manifest["n_truncated"] = manifest.get("n_truncated", 0) + entry.get("n_truncated", 0)
        else:
            return f"{JOURNAL} line {n + 1} records shard {index} after shard {len(shards) - 1}"
    return None


def write_manifest(folder: Path, manifest: dict, kind: str) -> None:
    """The manifest, whole, in place (atomically), then the journal it now includes removed."""
    atomic_write_json(folder / MANIFEST, manifest, json_of_kind(kind, "lookalike.store"))
    (folder / JOURNAL).unlink(missing_ok=True)
    fsync_dir(folder)


_ENTRY = {"file": str, "row_start": int, "row_end": int, "rows": int, "sha256": str}


def chain_problem(manifest: dict, fmt: type[ShardFormat]) -> str | None:
    """Why the manifest's shard list is not one contiguous chain from row 0 (entry fields, names in order,
    row ranges, row counts, the total), or None."""
    row = 0
    for i, entry in enumerate(manifest["shards"]):
        where = f"shard entry {i}"
        if not isinstance(entry, dict):
            return f"{where} is not an object"
        for key, typ in _ENTRY.items():
            if not isinstance(entry.get(key), typ) or isinstance(entry.get(key), bool):
                return f"{where} has no {typ.__name__} '{key}'"
        if entry["file"] != f"{fmt.prefix}-{i:05d}.h5":
            return f"{where} names {entry['file']!r}, expected {fmt.prefix}-{i:05d}.h5 (entries out of order?)"
        if entry["row_start"] != row:
            return f"{where} ({entry['file']}) starts at row {entry['row_start']}, the chain is at row {row}"
        if entry["rows"] < 1 or entry["row_end"] - entry["row_start"] != entry["rows"]:
            return (f"{where} ({entry['file']}) covers rows {entry['row_start']}..{entry['row_end']} but says "
                    f"{entry['rows']} rows")
        row = entry["row_end"]
    if manifest.get("complete"):
        total = manifest.get("total_rows")
        if total != row:
            return f"total_rows is {total!r}, the shards hold {row}"
    return None


def self_contained_problem(f) -> str | None:
    """Why an open HDF5 file would read data from outside itself (an external or soft link, a dataset with
    external raw storage, a virtual dataset), or None: a file's sha256 then covers everything read from it."""
    import h5py

    def walk(group, prefix: str) -> str | None:
        for name in group:
            link = group.get(name, getlink=True)
            where = f"{prefix}{name}"
            if isinstance(link, h5py.ExternalLink):
                return f"'{where}' is an external link to {link.filename}:{link.path}"
            if isinstance(link, h5py.SoftLink):
                return f"'{where}' is a soft link to {link.path}"
            obj = group[name]
            if isinstance(obj, h5py.Group):
                found = walk(obj, where + "/")
                if found:
                    return found
            elif isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    return f"dataset '{where}' is virtual (its data lives in other files)"
                if obj.external:
                    return f"dataset '{where}' keeps its data in external files ({obj.external[0][0]!r}...)"
        return None

    return walk(f, "")


def not_regular_problem(path: str | Path) -> str | None:
    """None for a regular file (links followed), else what it is: lookalike opens no FIFO, device or socket."""
    import stat

    from ..files import file_kind

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    return f"is {file_kind(mode)}, not a regular file"


def open_h5(path: str | Path, error=StoreError, what: str = "shard"):
    """An HDF5 file opened read-only for lookalike to read: refused (`error`, naming it) when anything in it
    points outside the file (`self_contained_problem`), so no checksum can be bypassed through HDF5 itself."""
    import h5py

    problem = not_regular_problem(path)  # a FIFO would block h5py's open forever, a device be read as HDF5
    if problem:
        raise error(f"{path}: {problem}; expected a lookalike {what}")
    f = h5py.File(path, "r")
    try:
        problem = self_contained_problem(f)
    except BaseException:
        f.close()
        raise
    if problem:
        f.close()
        raise error(f"{path}: {problem}; a lookalike {what} holds all its data itself, so this one is refused")
    return f


def sha_problem(folder: Path, entry: dict) -> str | None:
    path = folder / entry["file"]
    if not path.is_file():
        return "missing"
    if sha256_file(path) != entry["sha256"]:
        return "checksum mismatch (the file changed after it was written)"
    return None


class RaggedColumn(abc.ABC):
    """A column whose rows have different lengths (the engine's `batching.Encoded`): sliced by rows, joined with
    `concat`, sized by `nbytes`. The writer buffers and cuts it as it does numpy columns and lists."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, rows: slice) -> "RaggedColumn": ...

    @classmethod
    @abc.abstractmethod
    def concat(cls, parts: list) -> "RaggedColumn": ...

    @property
    @abc.abstractmethod
    def nbytes(self) -> int: ...


def _join(parts: list):
    if isinstance(parts[0], RaggedColumn):
        return type(parts[0]).concat(parts)
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return [x for p in parts for x in p]


def _size_estimate(columns: dict) -> int:
    """Bytes a shard of these columns will take on disk, with room for HDF5's own structures."""
    size = 0
    for v in columns.values():
        if isinstance(v, (np.ndarray, RaggedColumn)):
            size += v.nbytes
        elif isinstance(v, list):
            size += sum(len(str(x)) + 16 for x in v)
    return int(size * 1.1) + (1 << 20)


def _no_space(path: Path, free: int, need: int) -> str:
    return (f"{path}: no space left on device ({free / 1e6:.0f} MB free, about {need / 1e6:.0f} MB needed for "
            "this shard); free space and re-run the same command: nothing written so far is lost")


class RowBuffer:
    """Columns appended in row order and taken back `n` rows at a time (numpy, lists and ragged columns alike)."""

    def __init__(self):
        self._parts: list[dict] = []
        self.rows = 0

    def add(self, columns: dict) -> None:
        self._parts.append(columns)
        self.rows += len(columns["id"])

    def take(self, n: int) -> dict:
        parts: list[dict] = []
        need = n
        while need:
            chunk = self._parts[0]
            rows = len(chunk["id"])
            if rows <= need:
                parts.append(self._parts.pop(0))
                need -= rows
            else:
                parts.append({k: (v[:need] if v is not None else None) for k, v in chunk.items()})
                self._parts[0] = {k: (v[need:] if v is not None else None) for k, v in chunk.items()}
                need = 0
        self.rows -= n
        return {k: (_join([p[k] for p in parts]) if parts[0][k] is not None else None) for k in parts[0]}


def _new_manifest(folder: Path, fmt: ShardFormat) -> dict:
    """The manifest of a new folder (not written until its first shard); refuses a folder holding foreign files."""
    foreign = sorted(p.name for p in folder.iterdir() if p.name != WriterLock.NAME and not owned_tmp(p.name, fmt.owned))
    if foreign:
        raise StoreError(f"{folder}: not empty and not a lookalike {fmt.noun} (holds {', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}); refusing to write into it: give a new or empty folder")
    return {"kind": fmt.kind, "format_version": fmt.version, "config": fmt.config, **fmt.manifest_fields(),
            "shards": [], "complete": False, "total_rows": None, "n_truncated": 0, "created": utc_now()}


def _resumed_manifest(folder: Path, fmt: ShardFormat) -> dict:
    """The manifest of a folder to resume: same settings or refused; every listed shard checked again, the first bad
    one and all after it dropped (and their files, never recorded or now unlisted, removed)."""
    manifest = read_manifest(folder, type(fmt))
    refuse_other_settings(folder, fmt.identity(manifest["config"]), fmt.identity(fmt.config), f"a {fmt.noun}",
                          StoreError)
    bad = fmt.first_problem(folder, manifest)
    good = manifest["shards"][:bad[0]] if bad else manifest["shards"]
    if bad:
        log.warning("%s: %s; re-doing it and every shard after it", folder / manifest["shards"][bad[0]]["file"], bad[1])
    entries_missing = any(not (folder / f).exists() for f in fmt.entry_files)
    if bad or (manifest.get("complete") and entries_missing):
        manifest["shards"], manifest["complete"] = good, False
        write_manifest(folder, manifest, type(fmt).kind)
    listed = {s["file"] for s in good}
    for stray in folder.glob(f"{fmt.prefix}-*.h5"):
        if fmt.owned.fullmatch(stray.name) and stray.name not in listed:  # written, never recorded
            stray.unlink()
    manifest["config"] = fmt.config  # provenance (e.g. the corpus path) as given this time
    manifest["n_truncated"] = sum(s.get("n_truncated", 0) for s in good)
    return manifest


class ShardedWriter:
    """Writes a sharded folder in row order: `append` buffers columns and writes a shard at every `shard_rows`
    boundary; `finalize` writes the last shard and the format's entry files.

        with ShardedWriter(out, fmt, shard_rows) as w:
            w.append_columns({"id": [...], ...})
            counts = w.finalize()
    """

    def __init__(self, out_dir: str | Path, fmt: ShardFormat, shard_rows: int,
                 on_shard: Callable[[int], None] | None = None):
        self.dir = Path(out_dir)
        self.fmt = fmt
        self.config = fmt.config
        self.shard_rows = shard_rows
        self.on_shard = on_shard
        self.manifest: dict = {}
        self._lock = WriterLock(self.dir)
        self._created = False
        self._buf = RowBuffer()
        self._journal_lines = 0

    # ---- open / close
    def __enter__(self) -> "ShardedWriter":
        if self.dir.is_symlink() and not self.dir.exists():
            raise StoreError(f"{self.dir}: is a symbolic link to {os.readlink(self.dir)}, which does not exist; create "
                             "that folder or give another output folder")
        if self.dir.exists() and not self.dir.is_dir():
            raise StoreError(f"{self.dir}: exists and is not a folder; give a folder")
        self._created = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self.manifest = self._load_or_new()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
        if self._created and not (self.dir / MANIFEST).exists():
            # nothing recorded in a folder this run created: leave no stub behind
            (self.dir / WriterLock.NAME).unlink(missing_ok=True)
            try:
                self.dir.rmdir()
            except OSError:
                pass

    def _clean_own_temporaries(self) -> None:
        for p in self.dir.iterdir():
            if owned_tmp(p.name, self.fmt.owned):
                p.unlink(missing_ok=True)

    def _load_or_new(self) -> dict:
        fresh = not (self.dir / MANIFEST).exists()
        manifest = _new_manifest(self.dir, self.fmt) if fresh else None
        self._clean_own_temporaries()  # a crashed writer's (we hold the lock, so no live writer's)
        if fresh:
            return manifest
        manifest = _resumed_manifest(self.dir, self.fmt)
        if (self.dir / JOURNAL).exists():  # fold a crashed writer's journal in: the count starts afresh
            write_manifest(self.dir, manifest, self.fmt.kind)
        return manifest

    # ---- state
    @property
    def rows_done(self) -> int:
        shards = self.manifest["shards"]
        return shards[-1]["row_end"] if shards else 0

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def shards_done(self) -> int:
        return len(self.manifest["shards"])

    # ---- writing
    def append_columns(self, columns: dict) -> None:
        """Buffer rows (the next ones in order); a full shard is written as soon as its last row arrives."""
        n = len(columns["id"])
        bad = [k for k, v in columns.items() if v is not None and len(v) != n]
        if bad:
            raise StoreError(f"{self.dir}: append of {n} ids with {bad[0]} of length {len(columns[bad[0]])}")
        self._buf.add(columns)
        while self._buf.rows and self._buf.rows >= self.shard_rows - self.rows_done % self.shard_rows:
            self._flush(self.shard_rows - self.rows_done % self.shard_rows)

    def _flush(self, n: int) -> None:
        columns = self._buf.take(n)
        name = self.fmt.shard_name(self.shards_done)
        need = _size_estimate(columns)
        free = shutil.disk_usage(self.dir).free
        if free < need:
            raise StoreError(_no_space(self.dir / name, free, need))
        try:
            entry = self.fmt.write_shard(self.dir, self.shards_done, self.rows_done, columns)
        except OSError as exc:
            if not is_no_space(exc):
                raise
            raise StoreError(_no_space(self.dir / name, shutil.disk_usage(self.dir).free, need)) from exc
        self.record_shard(entry, verified=True)

    def record_shard(self, entry: dict, *, verified: bool = False) -> None:
        """Append a written shard (the next one in row order) to the manifest, atomically. Shards written by
        another process (Ray workers) are checked against their entry first."""
        if entry["row_start"] != self.rows_done or entry["file"] != self.fmt.shard_name(self.shards_done):
            raise StoreError(f"{self.dir}: shard {entry['file']} (rows {entry['row_start']}..) is not the next one")
        if not verified:
            problem = self.fmt.check_shard(self.dir, entry, self.manifest)
            if problem:
                raise StoreError(f"{self.dir / entry['file']}: {problem} (written by a worker)")
        index = len(self.manifest["shards"])
        self.manifest["shards"].append(entry)
        self.manifest["n_truncated"] = self.manifest.get("n_truncated", 0) + entry.get("n_truncated", 0)
        self._journal(index, entry)
        if self.on_shard:
            self.on_shard(self.shards_done)

    def _journal(self, index: int, entry: dict) -> None:
        """Record shard `index`: one fsynced line appended to the journal (O(1)); the journal is folded into the
        manifest when it is as long as the manifest's list (so each shard is rewritten O(1) times on average), and
        at once for the first shard (a folder is a store from its first recorded shard on)."""
        if not (self.dir / MANIFEST).exists() or self._journal_lines + 1 > max(64, index - self._journal_lines):
            self._fold()
            return
        fd = os.open(self.dir / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, (json.dumps({"index": index, **entry}, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if self._journal_lines == 0:
            fsync_dir(self.dir)
        self._journal_lines += 1

    def _fold(self) -> None:
        write_manifest(self.dir, self.manifest, self.fmt.kind)
        self._journal_lines = 0

    def finalize(self) -> dict:
        """Write what is buffered, the format's entry files, and mark the folder complete."""
        if self._buf.rows:
            self._flush(self._buf.rows)
        if not self.manifest["shards"]:
            raise StoreError(f"{self.dir}: no rows were written")
        self.fmt.finalize(self.dir, self.manifest)
        self.manifest.update(complete=True, total_rows=self.rows_done, finished=utc_now())
        self._fold()
        return {"rows": self.rows_done, "shards": self.shards_done, "n_truncated": self.manifest.get("n_truncated", 0)}
