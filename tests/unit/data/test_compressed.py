"""Compressed corpora (.gz, .xz, .bz2) read transparently in every format, streaming; damaged ones are one line."""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
from pathlib import Path

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


def _first_article_gz(archive: Path, out: Path) -> Path:
    """The archive's first article as a gzipped SQuAD file of its own, from a streamed slice of the archive (its
    first 300 kB decompressed; not the whole 8 MB)."""
    with gzip.open(archive, "rt", encoding="utf-8") as f:
        head = f.read(300_000)
    second = head.index('{"title"', head.index('{"title"') + 1)
    with gzip.open(out, "wt", encoding="utf-8") as f:
        f.write(head[:second].rstrip().rstrip(",") + "]}")
    return out


def test_the_shipped_squad_train_archive(shared_data, tmp_path):
    """All 442 SQuAD train articles as SQuAD 1.1 content, gzipped: its first article (a slice) reads as it is
    stored, every question with its context and answers."""
    first = _first_article_gz(shared_data / "squad1_train" / "train-v1.1-explorer.json.gz", tmp_path / "first.json.gz")
    recs = list(CorpusSpec(first).records())
    assert len(recs) > 200 and all(r.text_pair for r in recs) and all(r.answers for r in recs)
    assert len({r.id for r in recs}) == len(recs)


def _squad(sizes):
    """A SQuAD-format dict: article g has sizes[g] questions over two paragraphs."""
    data = []
    for g, size in enumerate(sizes):
        qas = [{"id": f"a{g}q{i}", "question": f"question {i} of {g}?", "answers": []} for i in range(size)]
        data.append({"title": f"article {g}", "paragraphs": [{"context": f"first context of {g}", "qas": qas[::2]},
                                                             {"context": f"second context of {g}", "qas": qas[1::2]}]})
    return {"data": data}


def test_stratified_bank_is_deterministic_and_covers_every_article():
    """The covering bank: the same share of every article (at least one question each), the same draw for the same
    seed, another for another seed, each row a question with its own paragraph's context."""
    from lookalike.data.sample import stratified_squad

    sizes = [3, 40, 400, 1, 57]
    squad = _squad(sizes)
    rows, info = stratified_squad(squad, 100, seed=0)
    again, _ = stratified_squad(squad, 100, seed=0)
    other, _ = stratified_squad(squad, 100, seed=1)
    assert rows == again and [r["id"] for r in rows] != [r["id"] for r in other]
    per_article = {f"article {g}": sum(r["article"] == f"article {g}" for r in rows) for g in range(len(sizes))}
    assert per_article == {"article 0": 1, "article 1": 8, "article 2": 80, "article 3": 1, "article 4": 11}
    assert info["articles"] == 5 and info["questions_in_train"] == 501 and info["bank_questions"] == len(rows) == 101
    assert len({r["id"] for r in rows}) == len(rows)  # no question twice
    for r in rows:  # the pair is the question's own paragraph
        g, i = (int(x) for x in r["id"][1:].split("q"))
        assert r["text"] == f"question {i} of {g}?" and r["pair"] == f"{'first' if i % 2 == 0 else 'second'} context of {g}"
    with pytest.raises(InputError, match="not a SQuAD file"):
        stratified_squad({"version": "x"}, 10, 0)


def test_stratified_bank_on_the_first_train_articles(shared_data):
    """Real SQuAD train articles (the first 10, a small file, not the 8 MB archive): every one is covered, in
    proportion."""
    import json

    from lookalike.data.sample import stratified_squad

    first = json.loads((shared_data / "squad2" / "train-v2.0-first10.json").read_text())
    rows, info = stratified_squad(first, 500, seed=0)
    assert info["articles"] == 10 and {r["article"] for r in rows} == {a["title"] for a in first["data"]}
    assert abs(len(rows) - 500) <= 10 and info["per_article_min"] >= 1
