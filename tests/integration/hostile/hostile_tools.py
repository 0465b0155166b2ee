"""The hostile suite's tools: the real command in a child process with its memory capped, one-line checks, and
snapshots of the files around an output that must not change.

Each case is a real file or process. A command is `python -m lookalike.cli ...` in a subprocess, its data segment
capped with RLIMIT_DATA (heap and anonymous mappings: what a runaway read or allocation grows), its peak resident
memory measured by the child itself (VmHWM, written as it exits), and its wall time bounded (a hang fails the test
instead of stalling the suite).

Why not wait4's ru_maxrss: Linux carries the parent's resident size into a forked child's ru_maxrss across exec,
so a child of a pytest process that has grown to 1.6 GB (after the e2e tier's models) would report 1.6 GB for a
command that used 40 MB. The child's own high-water mark (VmHWM of the address space exec gave it) is its own.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Run:
    rc: int
    out: str
    err: str
    max_rss_mb: float
    timed_out: bool


def run_cli(*args, stdin: bytes | None = None, mem_mb: int = 3072, timeout: float = 180, env: dict | None = None,
            cwd: Path | None = None, pass_fds=()) -> Run:
    """The `lookalike` command in a child process with its data segment capped at `mem_mb`."""
    import tempfile

    limit = mem_mb << 20

    def cap():
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(suffix=".hwm") as hwm:
        p = subprocess.Popen([sys.executable, "-c", _MEASURED, hwm.name,
                              *(a if isinstance(a, bytes) else str(a) for a in args)],
                             stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, stdout=out,
                             stderr=err, preexec_fn=cap, env={**os.environ, **(env or {})}, cwd=cwd,
                             pass_fds=pass_fds)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            p.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            if stdin is not None:
                try:
                    p.stdin.write(stdin)
                    p.stdin.close()
                except BrokenPipeError:
                    pass
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
        finally:
            timer.cancel()
        out.seek(0)
        err.seek(0)
        own = Path(hwm.name).read_text().strip()
        peak = int(own) / 1024 if own else usage.ru_maxrss / 1024  # killed before it could say: wait4's figure
        return Run(p.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                   peak, timed_out.is_set())


# the CLI run as `python -m lookalike.cli ARGS`, writing its own peak resident memory (kB) to argv[1] as it exits
_MEASURED = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def said():
    with open("/proc/self/status") as f:
        hwm = next((l.split()[1] for l in f if l.startswith("VmHWM:")), "")
    with open(out, "w") as f:
        f.write(hwm)
atexit.register(said)
sys.argv[0] = "lookalike"
runpy.run_module("lookalike.cli", run_name="__main__", alter_sys=True)
"""


def one_line(r: Run, *needles: str) -> str:
    """The run failed with exit code 2 and one error line holding every needle, no traceback."""
    assert not r.timed_out, "the command hung"
    assert r.rc == 2, (r.rc, r.err[-2000:])
    assert "Traceback" not in r.err, r.err[-3000:]
    errors = [line for line in r.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.err
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256 or link target} of everything under `folder` (what must not change)."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        rel = str(p.relative_to(folder))
        if p.name in (".lookalike.lock", ".lookalike-files.json"):  # lookalike's own bookkeeping
            continue
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def unchanged(before: dict[str, str], folder: Path) -> None:
    """Every file of `before` is still there with the same content (lookalike may only have added its own)."""
    after = snapshot(folder)
    for rel, digest in before.items():
        assert after.get(rel) == digest, f"{rel} was changed or removed"
