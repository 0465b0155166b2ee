"""Standard input as a corpus: spooled to a file of ours, because the engine fingerprints and re-reads a corpus.

The spool is the one stream lookalike reads from a pipe. It is bounded (LOOKALIKE_MAX_STDIN_MB, default 64 GiB,
and never past the disk's free space less 1 GiB), and it is removed when the run ends, fails, or is stopped by
SIGINT or SIGTERM. A spool left by a run killed with SIGKILL is named with that run's pid and removed by the
next run beside the same output.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import InputError
from .opener import _env_int
from .spec import CorpusSpec

KEEP_FREE = 1 << 30


def max_stdin_bytes() -> int:
    return _env_int("LOOKALIKE_MAX_STDIN_MB", 64 << 10) << 20


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_spools(parent: Path, name: str) -> None:
    pattern = re.compile(re.escape(f".{name}.stdin-") + r"(\d+)-[A-Za-z0-9_]+")
    for p in parent.glob(f".{name}.stdin-*"):
        m = pattern.fullmatch(p.name)
        if m and p.is_dir() and not p.is_symlink() and int(m.group(1)) != os.getpid() \
                and not _pid_alive(int(m.group(1))) and [c.name for c in p.iterdir()] in ([], ["stdin"]):
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit while the spool exists, so its `finally` removes it (SIGINT already raises)."""
    if sys.platform == "win32" or not _main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _blocks(stream: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    """The stream's bytes in blocks. A pipe or terminal is read with `select` and a short timeout, so a signal
    (SIGTERM) delivered to another thread (numpy's BLAS threads exist from import) still reaches the main thread's
    handler within a quarter second instead of waiting behind a read that never returns."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None or sys.platform == "win32" or stat.S_ISREG(os.fstat(fd).st_mode):
        while block := stream.read(size):
            yield block
        return
    import select

    while True:
        ready, _, _ = select.select([fd], [], [], 0.25)
        if not ready:
            continue
        block = os.read(fd, size)
        if not block:
            return
        yield block


def _spool(stream: BinaryIO, path: Path) -> int:
    limit = max_stdin_bytes()
    total = 0
    with open(path, "wb") as f:
        for block in _blocks(stream):
            total += len(block)
            if total > limit:
                raise InputError(f"standard input is larger than the spool limit ({limit >> 20} MiB; raise "
                                 "LOOKALIKE_MAX_STDIN_MB, or write it to a file and embed that)", path="-")
            if total % (64 << 20) < len(block) and shutil.disk_usage(path.parent).free < KEEP_FREE:
                raise InputError(f"standard input: the disk holding its spool ({path.parent}) is nearly full after "
                                 f"{total >> 20} MiB; write the input to a file elsewhere and embed that", path="-")
            f.write(block)
    return total


@contextlib.contextmanager
def spooled_stdin(spec: CorpusSpec, beside: Path, stream: BinaryIO | None = None) -> Iterator[CorpusSpec]:
    """`spec` pointed at a copy of standard input in a folder of ours beside `beside` (plain text lines unless
    spec.format says otherwise), removed afterwards. Piping the same content again gives the same fingerprint, so
    a run over it resumes."""
    beside = Path(beside).absolute()
    beside.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_spools(beside.parent, beside.name)
    with _terminate_as_exit():
        folder = Path(tempfile.mkdtemp(prefix=f".{beside.name}.stdin-{os.getpid()}-", dir=beside.parent))
        try:
            path = folder / "stdin"
            if _spool(stream or sys.stdin.buffer, path) == 0:
                raise InputError("standard input is empty", path="-")
            yield spec.replace(path=str(path), format=spec.format or "text")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
