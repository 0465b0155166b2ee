"""One owner for every output: lookalike writes only under names it owns and never replaces a file it did not write.

Every folder lookalike writes a file into keeps a ledger, `.lookalike-files.json`: the relative name, size and
sha256 of each file lookalike put there (and the private work folders it made, such as a fine-tune's
checkpoints). A name is

- *free* when nothing is there;
- *ours* when the ledger lists it and the file there still has the recorded size and sha256;
- *foreign* otherwise: a user's file, a file lookalike wrote and the user then edited or replaced, a symbolic
  link, a folder, a device.

Writing a foreign name is refused before anything is written (`claim` takes every name a command will write, so
a command that writes three files refuses all three up front). `clear` (the commands' `--overwrite`) removes
exactly the ledger's files and refuses, before deleting anything, when the folder holds a foreign one.

Folders with a format of their own (embedding stores, token caches) are owned by that format instead: their
manifest lists every shard with its sha256, and `core.shards` applies the same rules to the names it owns.
Updates of a ledger are serialised by an `flock` on the folder itself, so two lookalike runs writing different
files into one folder both get recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import LookalikeError
from .files import (
    atomic_file,
    crash_point,
    fsync_dir,
    json_of_kind,
    json_safe,
    load_json,
    owned_tmp,
    refuse_other_settings,
    remove_dead_temporaries,
    sha256_file,
    utc_now,
)

LEDGER = ".lookalike-files.json"
LEDGER_KIND = "lookalike.files"
# files of lookalike's own bookkeeping in a folder: never foreign, never listed
BOOKKEEPING = (LEDGER, ".lookalike.lock")


class OutputError(LookalikeError):
    """An output lookalike will not write: it would replace or delete a file lookalike did not write."""


def plain_name(name: str) -> bool:
    """A relative name inside a folder: no absolute path, no `..`, no empty or `.` parts, no NUL."""
    if not name or "\0" in name or name.startswith("/") or "\\" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


class OwnedFolder:
    """The files lookalike wrote into `folder`, as its ledger records them (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.ledger_path = self.folder / LEDGER

    # ---- the ledger
    def entries(self) -> dict[str, dict]:
        """{relative name: {"sha256", "size"} or {"dir": true}}; {} without a ledger. A ledger that is not
        lookalike's (edited, another program's) owns nothing: every file is then foreign."""
        p = self.ledger_path
        if not p.is_file() or p.is_symlink():
            return {}
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict) or data.get("kind") != LEDGER_KIND or not isinstance(data.get("files"), dict):
            return {}
        out = {}
        for name, e in data["files"].items():
            if plain_name(name) and isinstance(e, dict) and (e.get("dir") is True or (
                    isinstance(e.get("sha256"), str) and isinstance(e.get("size"), int))):
                out[name] = e
        return out

    @contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _update(self, change: Callable[[dict], None]) -> None:
        with self._locked():
            files = self.entries()
            change(files)
            with atomic_file(self.ledger_path, json_of_kind(LEDGER_KIND)) as tmp:
                tmp.write_text(json.dumps({"kind": LEDGER_KIND, "format_version": 1, "updated": utc_now(),
                                           "files": dict(sorted(files.items()))}, indent=1) + "\n")

    def record(self, *names: str) -> None:
        """List each name (a file lookalike just wrote under the folder) with its size and sha256."""
        entries = {n: {"sha256": sha256_file(self.folder / n), "size": (self.folder / n).stat().st_size}
                   for n in names}
        self._update(lambda files: files.update(entries))

    def intend(self, name: str, tmp: Path) -> None:
        """Record that `name` is about to become the content of `tmp` (written, not yet renamed): until `record`
        confirms it, the name is ours with either its previous recorded content or the new one, so a kill between
        the rename and the ledger's update never makes lookalike refuse its own file."""
        new = {"sha256": sha256_file(tmp), "size": tmp.stat().st_size}

        def change(files: dict) -> None:
            was = files.get(name)
            files[name] = {**new, "was": {k: was[k] for k in ("sha256", "size")} if was and "sha256" in was else None}
        self._update(change)

    def record_tree(self) -> list[str]:
        """Record every file under the folder (a folder lookalike built whole, in a temporary place)."""
        names = sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*")
                       if p.is_file() and not p.is_symlink() and str(p.relative_to(self.folder)) not in BOOKKEEPING)
        self.record(*names)
        return names

    def appending(self, name: str) -> "AppendFile":
        """An append-only file (resumable JSON lines): each `write` is flushed, fsynced and recorded, so after a
        crash the file is still ours as long as it starts with what the ledger holds."""
        self.claim(name)
        return AppendFile(self, name)

    def record_dir(self, name: str) -> None:
        """List `name` as a work folder lookalike made: what is inside it is lookalike's (checkpoints)."""
        self._update(lambda files: files.__setitem__(name, {"dir": True}))

    def forget(self, names: Iterable[str]) -> None:
        names = set(names)
        self._update(lambda files: [files.pop(n, None) for n in names])

    # ---- ownership
    def status(self, name: str, entries: dict | None = None) -> str:
        """"free", "ours" or "foreign" (see the module docstring)."""
        entries = self.entries() if entries is None else entries
        path = self.folder / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return "free"
        except NotADirectoryError:  # a parent is a file
            return "foreign"
        e = entries.get(name)
        if e is None:
            return "foreign"
        if e.get("dir"):
            return "ours" if stat.S_ISDIR(st.st_mode) else "foreign"
        if not stat.S_ISREG(st.st_mode):
            return "foreign"
        if e.get("append"):  # an append-only file: ours while it starts with what we recorded
            return "ours" if st.st_size >= e["size"] and _prefix_sha(path, e["size"]) == e["sha256"] else "foreign"
        states = [e] + ([e["was"]] if isinstance(e.get("was"), dict) else [])  # a write recorded as intended
        if not any(st.st_size == x.get("size") for x in states):
            return "foreign"
        digest = sha256_file(path)
        return "ours" if any(st.st_size == x.get("size") and digest == x.get("sha256") for x in states) else "foreign"

    def claim(self, *names: str, legacy: Callable[[Path], bool] | None = None, what: str = "file") -> None:
        """Refuse (OutputError, naming the file) unless every name is free or ours; creates the folder.
        legacy: recognises a lookalike file written before ledgers existed (a self-checking format)."""
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.folder}: exists and is not a folder; give a folder")
        entries = self.entries()
        for name in names:
            if not plain_name(name):
                raise OutputError(f"{self.folder}: {name!r} is not a plain name inside the folder")
            path = self.folder / name
            if path.is_dir() and not path.is_symlink() and not entries.get(name, {}).get("dir"):
                raise OutputError(f"{path}: is a folder; give a file name for the {what}")
            state = self.status(name, entries)
            if state == "foreign" and not _legacy(path, legacy):
                raise OutputError(f"{path}: exists and was not written by lookalike (or was changed since); "
                                  f"refusing to replace it: move it away or choose another output")
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (self.folder / name).parent.is_dir():
                remove_dead_temporaries(self.folder / name)

    # ---- writing
    @contextmanager
    def writing(self, name: str, *, legacy: Callable[[Path], bool] | None = None, what: str = "file") -> Iterator[Path]:
        """A temporary path to write `name` to; renamed into place and recorded when the block ends."""
        self.claim(name, legacy=legacy, what=what)
        final = self.folder / name
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(final, ours=lambda p: self.status(name) == "ours" or _legacy(p, legacy)) as tmp:
            yield tmp
            self.claim(name, legacy=legacy, what=what)  # again: a user's file may have appeared meanwhile
            self.intend(name, tmp)  # recorded before the file takes its name: a kill after the rename finds it ours
            crash_point("intended")
        self.record(name)

    def write_text(self, name: str, text: str, **kw) -> Path:
        with self.writing(name, **kw) as tmp:
            tmp.write_text(text)
        return self.folder / name

    def write_json(self, name: str, obj: Any, **kw) -> Path:
        with self.writing(name, **kw) as tmp, open(tmp, "w") as fh:
            json.dump(json_safe(obj), fh, indent=2)
            fh.write("\n")
        return self.folder / name

    def move_in(self, src_dir: str | Path) -> list[str]:
        """Move every file under `src_dir` (a temporary folder a library wrote into) to the same relative name
        here and record each; every name is claimed before the first is moved."""
        src_dir = Path(src_dir)
        names = sorted(str(p.relative_to(src_dir)) for p in src_dir.rglob("*") if p.is_file() and not p.is_symlink())
        self.claim(*names)
        for name in names:
            final = self.folder / name
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src_dir / name, final)
            fsync_dir(final.parent)
            self.record(name)
        return names

    # ---- the folder as a whole
    def foreign(self) -> list[str]:
        """Every file or folder under the folder that is not ours (relative names, sorted); bookkeeping files and
        our own temporaries are not foreign."""
        if not self.folder.is_dir():
            return []
        entries = self.entries()
        dirs = [n for n, e in entries.items() if e.get("dir")]
        out = []
        for root, subdirs, files in os.walk(self.folder):
            rel_root = os.path.relpath(root, self.folder)
            for d in list(subdirs):
                rel = d if rel_root == "." else f"{rel_root}/{d}"
                if rel in dirs:
                    subdirs.remove(d)  # a work folder of ours: its content is ours
                elif os.path.islink(os.path.join(root, d)):
                    out.append(rel)
                    subdirs.remove(d)
            for f in files:
                rel = f if rel_root == "." else f"{rel_root}/{f}"
                if rel in BOOKKEEPING:
                    continue
                if owned_tmp(os.path.basename(rel), _names_pattern(entries)):
                    continue
                if self.status(rel, entries) != "ours":
                    out.append(rel)
        return sorted(out)

    def refuse_foreign(self, action: str) -> None:
        bad = self.foreign()
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise OutputError(f"{self.folder}: holds {', '.join(bad[:3])}{more}, not written by lookalike (or changed "
                              f"since); refusing to {action}: move them away or choose another folder")

    def clear(self) -> int:
        """Remove every file lookalike recorded here (`--overwrite`), after checking that nothing foreign is
        there; nothing is removed when something is. Returns how many files were removed."""
        self.refuse_foreign("remove the earlier output")
        entries = self.entries()
        n = 0
        for name, e in sorted(entries.items(), key=lambda kv: -kv[0].count("/")):
            path = self.folder / name
            if e.get("dir"):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                    n += 1
            elif path.is_file() and not path.is_symlink():
                path.unlink()
                n += 1
        for d in sorted({str(Path(n_).parent) for n_ in entries if "/" in n_}, key=lambda s: -s.count("/")):
            try:
                (self.folder / d).rmdir()
            except OSError:
                pass
        self.ledger_path.unlink(missing_ok=True)
        return n


class AppendFile:
    def __init__(self, folder: OwnedFolder, name: str):
        self.folder, self.name = folder, name
        path = folder.folder / name
        self._hash = hashlib.sha256()
        self._size = 0
        if path.exists():
            with open(path, "rb") as fh:
                while block := fh.read(1 << 22):
                    self._hash.update(block)
                    self._size += len(block)
        self._fh = open(path, "ab")
        self._record()

    def _record(self) -> None:
        entry = {"sha256": self._hash.hexdigest(), "size": self._size, "append": True}
        self.folder._update(lambda files: files.__setitem__(self.name, entry))

    def write(self, text: str) -> None:
        data = text.encode()
        self._fh.write(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._hash.update(data)
        self._size += len(data)
        self._record()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "AppendFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _prefix_sha(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        left = size
        while left > 0 and (block := fh.read(min(left, 1 << 22))):
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def _names_pattern(entries: dict) -> re.Pattern:
    return re.compile("|".join(re.escape(os.path.basename(n)) for n in entries) or r"(?!)")


def owned_file(path: str | Path) -> tuple[OwnedFolder, str]:
    """The folder and name of a single-file output (`-o FILE`)."""
    p = Path(path)
    return OwnedFolder(p.parent if str(p.parent) else Path(".")), p.name


def _legacy(path: Path, legacy: Callable[[Path], bool] | None) -> bool:
    """A plain file an earlier lookalike wrote before ledgers existed, recognised by its own format (`legacy`)."""
    return bool(legacy) and path.is_file() and not path.is_symlink() and legacy(path)


def write_json(path: str | Path, obj: Any, **kw) -> Path:
    folder, name = owned_file(path)
    return folder.write_json(name, obj, **kw)


def write_text(path: str | Path, text: str, **kw) -> Path:
    folder, name = owned_file(path)
    return folder.write_text(name, text, **kw)


@contextmanager
def writing(path: str | Path, **kw) -> Iterator[Path]:
    folder, name = owned_file(path)
    with folder.writing(name, **kw) as tmp:
        yield tmp


def claim(*paths: str | Path, **kw) -> None:
    """Refuse unless every path is free or ours (see OwnedFolder.claim), before any of them is written."""
    for p in paths:
        folder, name = owned_file(p)
        folder.claim(name, **kw)


def guard_settings(folder: OwnedFolder, name: str, settings: dict, what: str, error=OutputError) -> None:
    """Record `settings` as `name` in an owned folder, or refuse when the file there records different ones
    (resumable outputs)."""
    path = folder.folder / name
    state = folder.status(name)
    if state == "ours":
        refuse_other_settings(folder.folder, load_json(path, "settings file"), settings, what, error)
    else:
        folder.write_json(name, settings)
