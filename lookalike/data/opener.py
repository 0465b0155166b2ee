"""One opener for every input file: regular files only, bounded lines and documents, bounded decompression.

Every corpus file lookalike reads (the readers, the fingerprint, aclImdb reviews, stdin's spool) is opened here:

- only regular files (a symbolic link is followed, and what it points to must be one): a FIFO, a device
  (`/dev/zero`), a socket or a process substitution (`<(...)`, a pipe) is refused with one line, before a byte
  is read, so nothing blocks or reads forever;
- a line or a record is read with a bounded buffer: one over `max_record_bytes()` is one error naming the
  file and the line, never an allocation of the whole line;
- compressed input (.gz/.xz/.bz2) is streamed, and refused once it has expanded past 64 MiB at more than
  `max_ratio()` times its compressed size (a compression bomb): memory stays bounded whatever the archive says;
- a whole-document format (JSON, SQuAD) is read up to `max_document_bytes()`.

The limits can be raised with the environment variables LOOKALIKE_MAX_RECORD_MB, LOOKALIKE_MAX_DOCUMENT_MB
and LOOKALIKE_MAX_RATIO (read at each open).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import InputError
from ..files import file_kind

COMPRESSED = {".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"), ".xz": lambda raw: lzma.LZMAFile(raw, "rb"),
              ".bz2": lambda raw: bz2.BZ2File(raw, "rb")}
BAD_STREAM = (EOFError, OSError, lzma.LZMAError, zlib.error)
# the ratio check starts once this much has come out (small archives of repetitive text are fine)
RATIO_GRACE = 64 << 20


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InputError(f"environment variable {name}={raw!r}: expected a whole number") from exc
    if value < 1:
        raise InputError(f"environment variable {name}={raw!r}: expected at least 1")
    return value


def max_record_bytes() -> int:
    """The longest line or record read (bytes): LOOKALIKE_MAX_RECORD_MB, default 64 MiB."""
    return _env_int("LOOKALIKE_MAX_RECORD_MB", 64) << 20


def max_document_bytes() -> int:
    """The largest whole-document file (JSON, SQuAD) read into memory: LOOKALIKE_MAX_DOCUMENT_MB, default 4 GiB."""
    return _env_int("LOOKALIKE_MAX_DOCUMENT_MB", 4096) << 20


def max_ratio() -> int:
    """The largest expansion of a compressed file past its first 64 MiB: LOOKALIKE_MAX_RATIO, default 200."""
    return _env_int("LOOKALIKE_MAX_RATIO", 200)


def _not_regular(path, mode: int, corpus: bool = True) -> InputError:
    hint = ""
    if stat.S_ISFIFO(mode) and corpus:
        hint = ("; lookalike reads a corpus twice (its fingerprint, then its records), which a pipe cannot do: "
                "pipe the content to standard input (`-`) instead")
    elif stat.S_ISDIR(mode):
        return InputError("is a folder, expected a file", path=path)
    return InputError(f"is {file_kind(mode)}, not a regular file; refusing to read it{hint}", path=path)


def check_regular(path: str | Path, corpus: bool = True) -> os.stat_result:
    """stat of a regular file (links followed), or InputError naming what it is instead (with the hint to pipe a
    corpus to stdin when it is a corpus)."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise InputError("no such file", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read it ({exc.strerror})", path=path) from exc
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode, corpus)
    return st


def open_regular(path: str | Path, corpus: bool = True) -> BinaryIO:
    """A binary handle on a regular file. Opened without blocking (a FIFO would block in open()) and checked on
    the open descriptor, so a file swapped for a device between a check and the open is refused too."""
    check_regular(path, corpus)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"cannot open it ({exc.strerror})", path=path) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _not_regular(path, st.st_mode, corpus)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=1 << 16)


class _BoundedExpansion(io.RawIOBase):
    """A decompressing stream that refuses to expand past the ratio limit (counted against the raw bytes read)."""

    def __init__(self, path: Path, raw: BinaryIO, decompressed: BinaryIO):
        self.path, self._raw, self._dec = path, raw, decompressed
        self.produced = 0
        self._ratio = max_ratio()

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        try:
            n = self._dec.readinto(buf)
        except BAD_STREAM as exc:
            raise stream_error(self.path, exc) from exc
        self.produced += n
        if self.produced > RATIO_GRACE:
            consumed = max(1, self._raw.tell())
            if self.produced > self._ratio * consumed:
                raise InputError(f"decompresses to more than {self._ratio}x its compressed size ({self.produced >> 20}"
                                 f" MiB from {consumed >> 10} KiB so far): refusing it as a likely compression bomb "
                                 "(raise LOOKALIKE_MAX_RATIO if it is real data)", path=self.path)
        return n

    def close(self) -> None:
        try:
            self._dec.close()
        finally:
            self._raw.close()
            super().close()


def stream_error(path: Path, exc: BaseException) -> InputError:
    return InputError(f"cannot decompress it ({type(exc).__name__}: {exc}; truncated or not {path.suffix[1:]}?)",
                      path=path)


def open_input(path: str | Path, corpus: bool = True) -> BinaryIO:
    """A buffered binary stream of the file's content (.gz/.xz/.bz2 decompressed, expansion bounded)."""
    path = Path(path)
    raw = open_regular(path, corpus)
    cls = COMPRESSED.get(path.suffix.lower())
    if cls is None:
        return raw
    return io.BufferedReader(_BoundedExpansion(path, raw, cls(raw)), 1 << 16)


def read_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line with its newline) with a bounded buffer; a line over the record limit is an
    InputError naming it."""
    path = Path(path)
    limit = max_record_bytes()
    with open_input(path) as fh:
        lineno = 0
        while True:
            try:
                raw = fh.readline(limit + 1)
            except BAD_STREAM as exc:
                raise stream_error(path, exc) from exc
            if not raw:
                return
            lineno += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                raise InputError(f"longer than the record limit ({limit >> 20} MiB; raise LOOKALIKE_MAX_RECORD_MB to "
                                 "read it)", path=path, record=f"line {lineno}")
            yield lineno, raw


def read_document(path: str | Path, *, limit: int | None = None, what: str = "file", corpus: bool = True) -> bytes:
    """The whole (decompressed) content of a file read as one document, bounded by `limit` (the document limit, or
    the record limit for one review or record). corpus: False for a file that is not a corpus (no stdin hint)."""
    path = Path(path)
    limit = max_document_bytes() if limit is None else limit
    parts, size = [], 0
    with open_input(path, corpus) as fh:
        try:  # in blocks: read(limit) would reserve the whole limit up front
            while size <= limit and (block := fh.read(min(1 << 22, limit + 1 - size))):
                parts.append(block)
                size += len(block)
        except BAD_STREAM as exc:
            raise stream_error(path, exc) from exc
    data = b"".join(parts)
    if len(data) > limit:
        env = "LOOKALIKE_MAX_DOCUMENT_MB" if limit == max_document_bytes() else "LOOKALIKE_MAX_RECORD_MB"
        raise InputError(f"larger than the {what} limit ({limit >> 20} MiB; raise {env} to read it)", path=path)
    return data
