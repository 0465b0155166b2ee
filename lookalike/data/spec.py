"""One description of "which records of which corpus", validated once and taken by every command.

A `CorpusSpec` names the corpus (a file, a folder or a hub dataset name), its format and fields, and a
deterministic subset (`every`/`offset`, then `limit`). Its `fingerprint()` hashes the whole content, so a
corpus edited anywhere (even keeping its size) is a different corpus, and the same file named by a relative
or an absolute path is the same one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError, unknown_key_message
from .opener import check_regular, open_regular
from .readers import FORMATS, RecordStream, read_corpus

# formats whose records carry a label in a named field; classification defaults that field to "label"
LABEL_FIELD_FORMATS = (".jsonl", ".json", ".csv", ".parquet")
DEFAULT_LABEL_FIELD = "label"


@dataclass(frozen=True)
class CorpusSpec:
    """path: file, folder or hub name (`squad_v2:validation`); fields apply to jsonl/json/csv/tsv/parquet."""

    path: str
    format: str | None = None
    text_field: str = "text"
    pair_field: str | None = None
    id_field: str | None = None
    label_field: str | None = None
    split: str | None = None
    limit: int | None = None
    every: int | None = None
    offset: int = 0

    def __post_init__(self):
        object.__setattr__(self, "path", str(self.path))
        if self.format is not None and self.format not in FORMATS:
            raise InputError(f"unknown format {self.format!r} (known: {', '.join(FORMATS)})", path=self.path)
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit {self.limit}: need at least 1 record", path=self.path, field="limit")
        if self.every is not None and self.every < 1:
            raise InputError(f"every {self.every}: need at least 1", path=self.path, field="every")
        if not 0 <= self.offset < (self.every or 1):
            raise InputError(f"offset {self.offset}: need 0 <= offset < every ({self.every or 1})", path=self.path,
                             field="offset")
        if not self.text_field:
            raise InputError("empty text field name", path=self.path, field="text_field")

    # ---- construction
    @classmethod
    def coerce(cls, corpus: "CorpusSpec | str | Path") -> "CorpusSpec":
        return corpus if isinstance(corpus, CorpusSpec) else cls(str(corpus))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | str, where: str) -> "CorpusSpec":
        """From an experiment file entry (`{path: ..., every: 2, ...}` or a bare path); unknown keys refused."""
        if isinstance(d, (str, Path)):
            return cls(str(d))
        if not isinstance(d, Mapping):
            raise InputError(f"expected a path or a mapping with 'path', got {type(d).__name__}", record=where)
        unknown = [k for k in d if k not in SPEC_KEYS]
        if unknown:
            raise InputError(unknown_key_message(unknown[0], SPEC_KEYS), record=where, field=unknown[0])
        if "path" not in d:
            raise InputError("needs a 'path'", record=where, field="path")
        return cls(**{k: _typed(k, v, where) for k, v in d.items()})

    def replace(self, **changes) -> "CorpusSpec":
        return dataclasses.replace(self, **changes)

    def for_labels(self) -> "CorpusSpec":
        """The spec a classification command reads: label field "label" by default for named-field formats."""
        if self.label_field is None and self.path.endswith(LABEL_FIELD_FORMATS):
            return self.replace(label_field=DEFAULT_LABEL_FIELD)
        return self

    # ---- reading
    @property
    def is_local(self) -> bool:
        return Path(self.path).exists()

    def records(self) -> RecordStream:
        """The selected records in file order; once iterated, `.provenance` says where their ids came from."""
        return read_corpus(self.path, self.format, text_field=self.text_field, pair_field=self.pair_field,
                           id_field=self.id_field, label_field=self.label_field, split=self.split,
                           limit=self.limit, every=self.every, offset=self.offset)

    def sample_texts(self, n: int) -> list[str]:
        """The first `n` non-empty texts among the first 4n selected records (sample texts: int8 calibration)."""
        return [r.text for r in self.replace(limit=4 * n).records() if r.text.strip()][:n]

    def count(self) -> int:
        return sum(1 for _ in self.records())

    def fingerprint(self) -> str:
        """sha256 of the whole content (files in sorted relative-path order, names included); hub names hash
        their name (the hub's revision is outside lookalike's reach)."""
        p = Path(self.path)
        if not p.exists():
            return "name:" + hashlib.sha256(self.path.encode()).hexdigest()[:32]
        if not p.is_dir():
            check_regular(p)  # before resolving: a pipe (`<(...)`) resolves to a name that does not exist
        p = p.resolve()
        files = sorted(x for x in p.rglob("*") if not x.is_dir()) if p.is_dir() else [p]
        stamp = tuple((str(f), (st := check_regular(f)).st_size, st.st_mtime_ns, st.st_ino) for f in files)
        return _content_hash(str(p), stamp)

    def settings(self) -> dict:
        """What selects the records, as stored in artifacts (the path is provenance, the fingerprint identity)."""
        return {"format": self.format or "auto", "text_field": self.text_field, "pair_field": self.pair_field or "",
                "id_field": self.id_field or "", "split": self.split or "",
                "limit": self.limit if self.limit is not None else -1, "every": self.every or 1,
                "offset": self.offset}

    def identity(self) -> dict:
        """The corpus as every artifact made from it records it: its location, content fingerprint and selection."""
        where = str(Path(self.path).resolve()) if self.is_local else self.path
        # provenance only: a file name that is not UTF-8 is recorded with its odd bytes escaped (\xff)
        where = where.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return {"corpus": where,
                "corpus_fingerprint": self.fingerprint(), **self.settings()}

    def as_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


SPEC_KEYS = tuple(f.name for f in dataclasses.fields(CorpusSpec))
_INT_KEYS = {"limit", "every", "offset"}


def _typed(key: str, value, where: str):
    if value is None:
        return None
    if key in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"expected an integer, got {value!r}", record=where, field=key)
        return value
    if not isinstance(value, (str, Path)):
        raise InputError(f"expected a string, got {value!r}", record=where, field=key)
    return str(value)


@lru_cache(maxsize=256)
def _content_hash(root: str, stamp: tuple) -> str:
    """Cached per (path, sizes, mtimes, inodes): one run hashes each corpus once, an edit re-hashes."""
    h = hashlib.sha256()
    base = Path(root)
    for name, size, _, _ in stamp:
        f = Path(name)
        h.update(os.fsencode(os.path.relpath(f, base) if base.is_dir() else f.name) + b"\0")
        h.update(str(size).encode() + b"\0")
        with open_regular(f) as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()[:32]
