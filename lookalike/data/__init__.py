"""Corpus readers: every supported format becomes an iterator of `Record`s; a `CorpusSpec` says which."""

from .readers import FORMATS, Record, RecordStream, detect_format, read_corpus
from .spec import CorpusSpec

__all__ = ["FORMATS", "CorpusSpec", "Record", "RecordStream", "detect_format", "read_corpus"]
