"""File contracts every stage shares: atomic JSON, checksums, directory fsync, UTC stamps, JSON loading with
typed errors, the settings guard, a writer lock and one progress bar.

Temporary files are named `<final name>.<pid>-<8 hex>.tmp`, so a cleanup can tell its own leftovers (by the
final name it owns) from anything else in a folder, and two writers never share a temporary name.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import InputError, LookalikeError

TMP_SUFFIX = re.compile(r"\.\d+(?:-[0-9a-f]{8})?\.tmp$|\.tmp$")


def file_kind(mode: int) -> str:
    return ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a folder" if stat.S_ISDIR(mode) else "not a regular file")


def cache_dir(sub: str | None = None) -> Path:
    """Where lookalike keeps shared caches (exports, int8 choices, token caches): $LOOKALIKE_CACHE or
    ~/.cache/lookalike, or its subfolder `sub` (made private, 0700, when lookalike makes it).

    A relative LOOKALIKE_CACHE is refused (the cache would move with the working folder), and so is a cache folder
    that other users can write to or that another user owns, as ssh refuses a group-writable ~/.ssh: whatever is
    in it would be read as lookalike's own."""
    env = os.environ.get("LOOKALIKE_CACHE")
    if env and not os.path.isabs(env):
        raise InputError(f"environment variable LOOKALIKE_CACHE={env!r} is a relative path; give an absolute one "
                         f"(e.g. {os.path.abspath(env)})")
    root = Path(env or Path.home() / ".cache" / "lookalike")
    if sub is None:
        private_folder(root, "the cache folder", make=False)
        return root
    private_folder(root, "the cache folder")
    return private_folder(root / sub, "the cache folder")


def private_folder(path: Path, what: str, *, make: bool = True) -> Path:
    """`path` (made 0700 when absent, with `make`), refused in one line when another user owns it or other users
    may write to it."""
    if make:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except FileExistsError:
            pass
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(st.st_mode):
        raise LookalikeError(f"{path}: {what} is not a folder")
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        who = "owned by another user" if st.st_uid != os.getuid() else \
            f"writable by {'other users' if st.st_mode & 0o002 else 'its group'} (mode {stat.S_IMODE(st.st_mode):o})"
        raise LookalikeError(f"{path}: {what} is {who}, so anything in it could have been put there by someone else; "
                             f"lookalike refuses it (`chmod go-w {path}`, or point LOOKALIKE_CACHE at a private "
                             "folder)")
    return path


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def tmp_name(path: Path) -> Path:
    """A temporary name beside `path`, unique to this process and call."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def owned_tmp(name: str, finals: re.Pattern) -> bool:
    """True when `name` is a temporary file of one of the final names `finals` matches (ours to clean)."""
    m = TMP_SUFFIX.search(name)
    return bool(m) and bool(finals.fullmatch(name[:m.start()]))


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str | Path) -> None:
    """Make a rename in `path` durable (the directory entry, not only the file's bytes)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - not every filesystem allows opening a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def atomic_replace(tmp: Path, final: Path) -> None:
    """Rename a fully written temporary file into place, durably."""
    os.replace(tmp, final)
    fsync_dir(final.parent)


def json_safe(obj: Any) -> Any:
    """NaN/inf become null (strict JSON), numpy scalars plain numbers, tuples lists."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return json_safe(obj.item())
    return obj


@contextmanager
def atomic_file(final: str | Path, ours: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """A temporary path beside `final` to write; when the block ends it is fsynced and put in place (and the
    folder fsynced), so readers see the old file or the new one; on an exception it is removed.

    The name is held, not assumed: a free name is taken with a hard link, which fails if anything (a file, a
    symbolic link) appeared there meanwhile; an occupied name is replaced only when it is a regular file and
    `ours(final)` says it is the writer's own (by default: never), else LookalikeError naming it.

        with atomic_file(out) as tmp, h5py.File(tmp, "w") as f: ...
    """
    final = Path(final)
    tmp = tmp_name(final)
    try:
        yield tmp
        fsync_file(tmp)
        place(tmp, final, ours)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and is_no_space(exc):  # one line naming the file, whoever was writing it
            raise LookalikeError(f"{final}: no space left on device while writing it (nothing of it was kept); "
                                 "free space and re-run the same command (finished files are kept)") from exc
        raise


def is_no_space(exc: BaseException) -> bool:
    """ENOSPC, also as HDF5 words it (its errors carry the errno in their text)."""
    return getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)


def require_space(path: Path, need: int) -> None:
    """LookalikeError naming `path` when its file system has fewer than `need` bytes free (checked before a write
    whose size is known, so a full disk is said before anything is written)."""
    import shutil

    folder = path if path.is_dir() else path.parent
    free = shutil.disk_usage(folder).free
    if free < need:
        raise LookalikeError(f"{path}: needs {need / 2**20:.1f} MiB and {folder} has {free / 2**20:.1f} MiB free; "
                             "free space or choose another output folder")


CRASH_ENV = "LOOKALIKE_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    """A step boundary where the tests kill the process (SIGKILL, deterministically) when LOOKALIKE_TEST_CRASH_AT
    names it: "intended" (ledger updated, file not yet in place), "placed" (file in place, not yet confirmed)."""
    if os.environ.get(CRASH_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def place(tmp: Path, final: Path, ours: Callable[[Path], bool] | None = None) -> None:
    """Move a fully written temporary file to `final`, durably, without ever replacing what is not ours (see
    `atomic_file`)."""
    try:
        os.link(tmp, final)  # atomic create-if-absent: never follows or replaces a link or a file
    except FileExistsError as exc:
        st = os.lstat(final)
        if not stat.S_ISREG(st.st_mode) or ours is None or not ours(final):
            what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a file lookalike did not write"
            raise LookalikeError(f"{final}: {what} appeared at this output name while lookalike was writing it; "
                                 "it is left as it is (move it away and re-run)") from exc
        os.replace(tmp, final)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
            raise
        os.replace(tmp, final)  # a file system without hard links: the plain rename
    else:
        os.unlink(tmp)
    fsync_dir(final.parent)
    crash_point("placed")


def json_of_kind(kind: str, default: str | None = None) -> Callable[[Path], bool]:
    """`ours` for `atomic_file`: the occupant is a JSON object whose "kind" is `kind` (lookalike's own format;
    `default`: the kind of one written before kinds were recorded)."""
    def ours(path: Path) -> bool:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return False
        return isinstance(data, dict) and data.get("kind", default) == kind
    return ours


def h5_with_attr(attr: str, value=None) -> Callable[[Path], bool]:
    """`ours` for `atomic_file`: the occupant is an HDF5 file carrying attribute `attr` (equal to `value` if given):
    a shard or entry file of lookalike's, which identify themselves."""
    def ours(path: Path) -> bool:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if attr not in f.attrs:
                    return False
                have = f.attrs[attr]
                return value is None or (have.item() if hasattr(have, "item") else have) == value
        except (OSError, ValueError):
            return False
    return ours


def in_own_folder(path: Path) -> bool:
    """`ours` for files inside a work folder lookalike made and owns whole (a regular file there is its own)."""
    return True


def atomic_write_json(path: str | Path, obj: Any, ours: Callable[[Path], bool] | None = None) -> None:
    """Write JSON atomically and durably (see `atomic_file`; `ours` says when an existing file may be replaced)."""
    with atomic_file(path, ours) as tmp, open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")


def load_json(path: str | Path, what: str = "file") -> Any:
    """Parsed JSON; InputError naming the file (and line) when it is missing or not JSON."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such {what}", path=p)
    if p.is_dir():
        raise InputError(f"is a folder, expected a {what}", path=p)
    if not p.is_file():
        raise InputError(f"is not a regular file, expected a {what}", path=p)
    try:
        return json.loads(p.read_text(encoding="utf-8"), object_pairs_hook=unique_keys(p))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON at line {exc.lineno}: {exc.msg}", path=p) from exc
    except UnicodeDecodeError as exc:
        raise InputError("not UTF-8 text", path=p) from exc
    except RecursionError as exc:
        raise InputError("JSON nested too deeply", path=p) from exc


def parse_json(text: str, path: Path, record: str | None = None) -> Any:
    """JSON text as lookalike reads every user's JSON: a key given twice in one object refused, nesting too deep
    for the parser one InputError (not a RecursionError), invalid JSON one InputError naming the file and record."""
    try:
        return json.loads(text, object_pairs_hook=unique_keys(path, record))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", path=path, record=record or f"line {exc.lineno}") from exc
    except RecursionError as exc:
        raise InputError("JSON nested too deeply", path=path, record=record) from exc


def unique_keys(path: Path, record: str | None = None):
    """A json object hook that refuses a key given twice in one object (json keeps the last one, silently)."""
    def hook(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise InputError(f"key {k!r} appears twice in one object (which one is meant?)", path=path,
                                 record=record, field=k)
            out[k] = v
        return out
    return hook


def differences(old: dict, new: dict) -> list[str]:
    """Every key (sorted) whose value differs between two settings dicts, compared as stored in JSON."""
    old, new = json.loads(json.dumps(old, default=str)), json.loads(json.dumps(new, default=str))
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def first_difference(old: dict, new: dict) -> str | None:
    """The first key (sorted) whose value differs between two settings dicts, compared as stored in JSON."""
    found = differences(old, new)
    return found[0] if found else None


def refuse_other_settings(where, old: dict, new: dict, what: str, error=InputError) -> None:
    """Raise `error` when `old` (stored) and `new` settings differ, naming every differing key (a changed
    --pooling also changes the max length it implies: both are said) and the ways out."""
    keys = differences(old, new)
    if keys:
        said = "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys[:6])
        more = f"; and {len(keys) - 6} more" if len(keys) > 6 else ""
        raise error(f"{where}: holds {what} made with other settings ({said}{more}); resume with the same "
                    "settings or write to another output folder (embed, export and finetune also take --overwrite, "
                    "which deletes only what lookalike wrote)")


def settings_guard(path: Path, settings: dict, what: str, error=InputError) -> None:
    """Record `settings` in `path`, or refuse when the file records different ones (resumable outputs)."""
    if path.exists():
        refuse_other_settings(path.parent, load_json(path, "settings file"), settings, what, error)
    else:
        atomic_write_json(path, settings)  # a free name only: anything that appears there meanwhile is refused


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_dead_temporaries(path: Path) -> None:
    """Remove temporaries of `path` (`<name>.<pid>-<hex>.tmp`) whose writing process no longer runs (a kill -9
    mid-write); a live writer's temporaries, and every other file, are left alone."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)-[0-9a-f]{8}\.tmp")
    for p in path.parent.glob(f"{path.name}.*.tmp"):
        m = pattern.fullmatch(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)


def check_output_file(path: Path, kind_ok, what: str) -> None:
    """Refuse to write `path` when it is a folder, or an existing file lookalike did not make (`kind_ok(path)`);
    clean up temporaries of `path` left by a killed writer."""
    if path.is_dir():
        raise InputError(f"is a folder; give a file name for the {what}", path=path)
    if path.exists() and not kind_ok(path):
        raise InputError(f"exists and is not a lookalike {what}; refusing to overwrite it", path=path)
    if path.parent.is_dir():
        remove_dead_temporaries(path)


class WriterLock:
    """An exclusive lock on an output folder for the whole run (`fcntl.flock` on OUT/.lookalike.lock).

    A second writer fails at once with the holder's pid. The lock dies with its process (kill -9 included),
    so a crashed run never blocks the next one.
    """

    NAME = ".lookalike.lock"

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / self.NAME
        self._fd: int | None = None

    def acquire(self) -> "WriterLock":
        import fcntl

        try:  # never through a symlink: the lock file is ours, and a link could point at a user's file
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if os.path.islink(self.path) or exc.errno == errno.ELOOP:
                raise LookalikeError(f"{self.path}: is a symbolic link, not lookalike's lock file; remove it (it "
                                     "is not ours to delete) and re-run") from exc
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise LookalikeError(f"{self.path}: is not a regular file, so not lookalike's lock file; remove it and "
                                 "re-run")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LookalikeError(f"{self.path.parent}: is being written by pid {holder} (another lookalike run); "
                                 "wait for it or use another output folder") from exc
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    @classmethod
    def holder(cls, folder: str | Path) -> str | None:
        """The pid holding `folder`'s lock (a writer is running), or None."""
        import fcntl

        path = Path(folder) / cls.NAME
        if not path.is_file() or path.is_symlink():
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except BlockingIOError:
            return os.read(fd, 64).decode(errors="replace").strip() or "?"
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw) -> None:
        pass

    def close(self) -> None:
        pass


def interactive() -> bool:
    """The one rule for progress bars and status lines: a person at a terminal (stderr) who did not ask for quiet
    (-q sets lookalike's log level to errors only)."""
    import logging

    return sys.stderr.isatty() and logging.getLogger("lookalike").getEffectiveLevel() < logging.ERROR


def status(message: str) -> None:
    """One line saying which long step runs now, for a person at a terminal (not under -q, not into logs)."""
    if interactive():
        print(f"… {message}", file=sys.stderr, flush=True)


def shows_progress(enabled: bool | None) -> bool:
    """Whether `progress_bar(enabled)` draws a bar (None: `interactive()`)."""
    return interactive() if enabled is None else bool(enabled)


def progress_bar(enabled: bool | None, *, total: int | None = None, initial: int = 0, unit: str = "rows",
                 desc: str = ""):
    """A tqdm bar on stderr (enabled=None: when stderr is a terminal), or an object with the same methods."""
    if not shows_progress(enabled):
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True, file=sys.stderr)


# characters str.splitlines (and some editors) take for line ends that JSON leaves as they are: escaped, so a line
# of texts.jsonl / ids.jsonl is one record whatever reads it
_LINE_ENDS = {c: f"\\u{ord(c):04x}" for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def jsonl_line(value) -> str:
    """One JSON line: UTF-8 as is, except every character some reader takes for a line end (escaped)."""
    return json.dumps(value, ensure_ascii=False).translate(str.maketrans(_LINE_ENDS)) + "\n"
