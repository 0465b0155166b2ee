"""Corpus readers: every supported format becomes an iterator of `Record`s."""

from .readers import FORMATS, Record, count_records, detect_format, read_corpus

__all__ = ["FORMATS", "Record", "count_records", "detect_format", "read_corpus"]
