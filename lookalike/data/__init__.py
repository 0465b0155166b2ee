"""Corpus readers: every supported format becomes an iterator of `Record`s; a `CorpusSpec` says which."""

from .readers import FORMATS, Record, count_records, detect_format, read_corpus
from .spec import CorpusSpec

__all__ = ["FORMATS", "CorpusSpec", "Record", "count_records", "detect_format", "read_corpus"]
