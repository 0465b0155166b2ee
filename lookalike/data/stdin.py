"""Standard input as a corpus: spooled to a file of ours, because the engine fingerprints and re-reads a corpus."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import InputError
from .spec import CorpusSpec


@contextlib.contextmanager
def spooled_stdin(spec: CorpusSpec, beside: Path, stream: BinaryIO | None = None) -> Iterator[CorpusSpec]:
    """`spec` pointed at a copy of standard input in a folder of ours beside `beside` (plain text lines unless
    spec.format says otherwise), removed afterwards. Piping the same content again gives the same fingerprint, so
    a run over it resumes."""
    beside = Path(beside).absolute()
    beside.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{beside.name}.stdin-", dir=beside.parent))
    try:
        path = folder / "stdin"
        with open(path, "wb") as f:
            shutil.copyfileobj(stream or sys.stdin.buffer, f, 1 << 20)
        if path.stat().st_size == 0:
            raise InputError("standard input is empty", path="-")
        yield spec.replace(path=str(path), format=spec.format or "text")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
