"""Compressed corpora (.gz, .xz, .bz2) read transparently in every format, streaming; damaged ones are one line."""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil

import pytest

from lookalike.data import CorpusSpec
from lookalike.errors import InputError

OPENERS = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}


def _compress(src, dst):
    with open(src, "rb") as fin, OPENERS[dst.suffix](dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dst


@pytest.mark.parametrize("suffix", list(OPENERS))
@pytest.mark.parametrize("name,kw", [
    ("imdb/imdb_test_2k.tsv", {}),
    ("squad2/train-v2.0-first10.json", {}),
    ("newsqa/mrqa_NewsQA_dev_sample.jsonl", {}),
    ("newsqa/newsqa_dev_robustqa.json", {}),
])
def test_compressed_reads_as_the_plain_file(shared_data, tmp_path, suffix, name, kw):
    src = shared_data / name
    dst = _compress(src, tmp_path / (src.name + suffix))
    plain = list(CorpusSpec(src, limit=300, **kw).records())
    packed = list(CorpusSpec(dst, limit=300, **kw).records())
    assert packed == plain and len(plain) > 0
    assert CorpusSpec(dst).fingerprint() != CorpusSpec(src).fingerprint()  # taken over the file as stored


def test_text_jsonl_csv_compressed(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "a.jsonl").write_text('{"id": "x", "text": "one"}\n{"id": "y", "text": "two"}\n')
    (tmp_path / "a.csv").write_text("id,text\nx,one\ny,two\n")
    for name in ("a.txt", "a.jsonl", "a.csv"):
        for suffix in OPENERS:
            dst = _compress(tmp_path / name, tmp_path / (name + suffix))
            assert [r.text for r in CorpusSpec(dst).records()] == ["one", "two"], dst


def test_a_damaged_archive_is_one_line(shared_data, tmp_path):
    dst = _compress(shared_data / "imdb" / "imdb_test_2k.tsv", tmp_path / "t.tsv.gz")
    dst.write_bytes(dst.read_bytes()[: len(dst.read_bytes()) // 2])
    with pytest.raises(InputError, match="cannot decompress it") as e:
        list(CorpusSpec(dst).records())
    assert str(dst) in str(e.value)


def test_the_shipped_squad_train_archive(shared_data):
    """All 442 SQuAD train articles as SQuAD 1.1 content, gzipped: read as it is stored."""
    recs = list(CorpusSpec(shared_data / "squad1_train" / "train-v1.1-explorer.json.gz", limit=500).records())
    assert len(recs) == 500 and all(r.text_pair for r in recs) and all(r.answers for r in recs)
