"""Corpus readers against the real ../shared/data samples (parsed independently here) and crafted fixtures."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

from lookalike.data import Record, detect_format, read_corpus
from lookalike.errors import InputError


def test_squad2_dev500_queries(shared_data):
    folder = shared_data / "squad2_dev500"
    queries = json.loads((folder / "queries.json").read_text())["queries"]
    truth = json.loads((folder / "ground_truth.json").read_text())
    recs = list(read_corpus(folder))
    assert detect_format(folder) == "queries"
    assert len(recs) == len(queries) == 500
    assert [r.id for r in recs] == [q["id"] for q in queries]
    assert all(r.text == q["question"] and r.text_pair == q["context"] for r, q in zip(recs, queries))
    assert sum(r.is_impossible for r in recs) == sum(t["is_impossible"] for t in truth.values()) == 258
    for r in recs:
        assert list(r.answers) == [a for a in truth[r.id]["answers"] if a]
        assert r.is_impossible == (not r.answers)
        for a, s in zip(r.answers, r.answer_starts):
            assert r.text_pair[s: s + len(a)] == a


def test_cuad500_queries(shared_data):
    recs = list(read_corpus(shared_data / "cuad500"))
    assert len(recs) == 500 and recs[0].id == "cuad_0"


def test_imdb_tsv(shared_data):
    path = shared_data / "imdb" / "imdb_1k.tsv"
    rows = [line.rstrip("\n").rsplit("\t", 1) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    recs = list(read_corpus(path))
    assert detect_format(path) == "imdb-tsv"
    assert len(recs) == len(rows) == 1000
    assert sum(r.label == 1 for r in recs) == 503 and sum(r.label == 0 for r in recs) == 497
    assert [r.text for r in recs] == [t for t, _ in rows]


def test_jsonl_csv_tsv_parquet_text(tmp_path):
    rows = [{"uid": f"a{i}", "body": f"text {i}", "q": f"pair {i}", "y": i % 2} for i in range(5)]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "c.json").write_text(json.dumps(rows))
    with open(tmp_path / "c.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(tmp_path / "c.tsv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    for name in ("c.jsonl", "c.json", "c.csv", "c.tsv", "c.parquet"):
        recs = list(read_corpus(tmp_path / name, text_field="body", pair_field="q", id_field="uid", label_field="y"))
        assert [r.id for r in recs] == [r["uid"] for r in rows], name
        assert [r.text for r in recs] == [r["body"] for r in rows], name
        assert [r.text_pair for r in recs] == [r["q"] for r in rows], name
        assert [str(r.label) for r in recs] == [str(r["y"]) for r in rows], name
    (tmp_path / "c.txt").write_text("first\n\nthird\n")
    recs = list(read_corpus(tmp_path / "c.txt"))
    assert [(r.id, r.text) for r in recs] == [("0", "first"), ("1", ""), ("2", "third")]  # empty line kept


def test_squad_json_and_bad_answer_start(tmp_path):
    squad = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "q1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}],
         "is_impossible": False},
        {"id": "q2", "question": "Who?", "answers": [], "is_impossible": True}]}]}]}
    (tmp_path / "s.json").write_text(json.dumps(squad))
    recs = list(read_corpus(tmp_path / "s.json"))
    assert detect_format(tmp_path / "s.json") == "squad"
    assert recs[0] == Record("q1", "Where is Paris?", "Paris is in France.", None, ("France",), (12,), False)
    assert recs[1].is_impossible and recs[1].answers == ()
    squad["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 3
    (tmp_path / "bad.json").write_text(json.dumps(squad))
    with pytest.raises(InputError, match=r"question q1: field 'answers\[0\]\.answer_start'"):
        list(read_corpus(tmp_path / "bad.json"))
    del squad["data"][0]["paragraphs"][0]["qas"][0]["answers"]
    (tmp_path / "noans.json").write_text(json.dumps(squad))
    with pytest.raises(InputError, match=r"question q1: field 'answers': missing"):
        list(read_corpus(tmp_path / "noans.json"))


def test_newsqa_formats(tmp_path):
    story = "CNN -- The cat sat on the mat today. Officials said nothing."
    with open(tmp_path / "combined-newsqa-data-v1.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["story_id", "question", "answer_char_ranges", "is_answer_absent", "is_question_bad",
                    "validated_answers", "story_text"])
        w.writerow(["./cnn/stories/a.story", "Where did the cat sit?", "23:34|None|23:34", "0", "0", "", story])
        w.writerow(["./cnn/stories/a.story", "Who spoke?", "None|None", "1", "0", "", story])
    recs = list(read_corpus(tmp_path / "combined-newsqa-data-v1.csv"))
    assert detect_format(tmp_path / "combined-newsqa-data-v1.csv") == "newsqa-csv"
    assert recs[0].id == "./cnn/stories/a.story#0" and recs[0].answers == (story[23:34],)
    assert recs[1].is_impossible and recs[1].id.endswith("#1")
    with open(tmp_path / "dev.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["story_id", "story_text", "question", "answer_token_ranges"])
        w.writerow(["s1", story, "What sat?", "3:4"])
    recs = list(read_corpus(tmp_path / "dev.csv"))
    assert recs[0].answers == ("cat",)
    js = {"data": [{"storyId": "s1", "text": story, "type": "test",
                    "questions": [{"q": "What sat?", "consensus": {"s": 11, "e": 14}}, {"q": "Why?", "consensus": {"noAnswer": True}}]}]}
    (tmp_path / "combined.json").write_text(json.dumps(js))
    recs = list(read_corpus(tmp_path / "combined.json"))
    assert detect_format(tmp_path / "combined.json") == "newsqa-json"
    assert recs[0].answers == ("cat",) and recs[1].is_impossible
    lines = [json.dumps({"header": {"dataset": "NewsQA"}}),
             json.dumps({"context": story, "qas": [{"qid": "m1", "question": "What sat?", "answers": ["cat"],
                                                      "detected_answers": [{"text": "cat", "char_spans": [[11, 13]]}]}]})]
    with gzip.open(tmp_path / "NewsQA.jsonl.gz", "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    recs = list(read_corpus(tmp_path / "NewsQA.jsonl.gz"))
    assert detect_format(tmp_path / "NewsQA.jsonl.gz") == "mrqa"
    assert recs == [Record("m1", "What sat?", story, None, ("cat",), (11,), False)]


def test_aclimdb_and_hf_disk(tmp_path):
    for split in ("train", "test"):
        for lab in ("pos", "neg"):
            d = tmp_path / "aclImdb" / split / lab
            d.mkdir(parents=True)
            for i in (10, 2):
                (d / f"{i}_7.txt").write_text(f"{split} {lab} {i}")
    recs = list(read_corpus(tmp_path / "aclImdb"))
    assert [r.id for r in recs] == ["test/neg/2_7", "test/neg/10_7", "test/pos/2_7", "test/pos/10_7"]
    assert [r.label for r in recs] == [0, 0, 1, 1]
    assert len(list(read_corpus(tmp_path / "aclImdb", split="train"))) == 4
    import datasets

    ds = datasets.Dataset.from_dict({"id": ["x", "y"], "question": ["Q1", "Q2"], "context": ["abc def", "ghi"],
                                     "answers": [{"text": ["def"], "answer_start": [4]}, {"text": [], "answer_start": []}]})
    ds.save_to_disk(str(tmp_path / "hfds"))
    recs = list(read_corpus(tmp_path / "hfds"))
    assert recs[0].answers == ("def",) and recs[1].is_impossible


@pytest.mark.parametrize("content,fmt,match", [
    (b'{"text": "a"}\n{"text": \n', "c.jsonl", r"c\.jsonl: line 2: invalid JSON"),
    (b'{"text": "a"}\n{"body": "b"}\n', "c.jsonl", r"line 2: field 'text': missing"),
    (b"ok\n\xff\xfe bad\n", "c.txt", r"line 2: undecodable bytes"),
    (b"", "c.txt", r"empty corpus"),
    (b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "c.jsonl", r"duplicate id 'a'"),
])
def test_bad_input_errors(tmp_path, content, fmt, match):
    p = tmp_path / fmt
    p.write_bytes(content)
    with pytest.raises(InputError, match=match):
        list(read_corpus(p, id_field="id" if b'"id"' in content else None))


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(read_corpus(tmp_path / "nope.txt"))
    (tmp_path / "a.txt").write_text("x\n")
    with pytest.raises(InputError, match="unknown format 'xml'"):
        list(read_corpus(tmp_path / "a.txt", "xml"))


def test_newsqa_shared_files_both_forms(shared_data, tmp_path):
    """The paper's OOD set: MRQA's NewsQA dev as SQuAD-style JSON, and the MRQA jsonl form with or without its
    header line; the same questions come out of both."""
    from lookalike.data import detect_format

    squad_form = shared_data / "newsqa" / "newsqa_dev_robustqa.json"
    recs = list(read_corpus(squad_form))
    assert len(recs) == 4212 and len({r.id for r in recs}) == 4212
    assert all(r.answers and r.text_pair[r.answer_starts[0]:].startswith(r.answers[0]) for r in recs)
    sample = shared_data / "newsqa" / "mrqa_NewsQA_dev_sample.jsonl"
    assert detect_format(sample) == "mrqa"  # no header line in this sample
    mrqa = list(read_corpus(sample))
    assert len(mrqa) == 17
    by_id = {r.id: r for r in recs}
    for r in mrqa:
        ref = by_id[r.id]
        assert (r.text, r.text_pair) == (ref.text, ref.text_pair) and ref.answers[0] in r.answers
    with_header = tmp_path / "NewsQA-dev.jsonl"
    with_header.write_text('{"header": {"dataset": "NewsQA", "split": "dev"}}\n' + sample.read_text())
    assert [r.id for r in read_corpus(with_header)] == [r.id for r in mrqa]


def test_a_stream_says_where_its_ids_came_from(tmp_path):
    """Provenance, filled as the reader reads: the format, and the ids' source (a field, or row numbers)."""
    from lookalike.data.readers import Provenance, read_corpus

    (tmp_path / "with.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n')
    (tmp_path / "without.jsonl").write_text('{"text": "x"}\n')
    s = read_corpus(tmp_path / "with.jsonl")
    assert isinstance(s.provenance, Provenance) and s.provenance.ids is None  # nothing read yet
    assert [r.id for r in s] == ["a", "b"]
    assert (s.provenance.format, s.provenance.ids) == ("jsonl", "field 'id' (found in the records)")
    s = read_corpus(tmp_path / "without.jsonl")
    list(s)
    assert s.provenance.ids == "row numbers"


# ---- every reader x every corpus option: honoured (the records change as the option says) or refused in one
# line naming the option; never silently ignored (round three: --text-field question on SQuAD embedded pairs)
def _corpora(shared_data, tmp_path):
    jl = tmp_path / "c.jsonl"
    jl.write_text("".join(json.dumps({"id": f"d{i}", "body": f"text {i}", "title": f"title {i}", "y": i % 2,
                                      "text": f"plain {i}"}) + "\n" for i in range(4)))
    cs = tmp_path / "c.csv"
    with open(cs, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "body", "title", "y", "text"])
        w.writerows([f"d{i}", f"text {i}", f"title {i}", i % 2, f"plain {i}"] for i in range(4))
    tx = tmp_path / "c.txt"
    tx.write_text("one\ntwo\n")
    return {"jsonl": jl, "csv": cs, "text": tx, "imdb-tsv": shared_data / "imdb" / "imdb_1k.tsv",
            "queries": shared_data / "squad2_dev500", "squad": shared_data / "squad2" / "cs224n-dev-v2.0.json",
            "newsqa-json": None, "mrqa": shared_data / "newsqa" / "mrqa_NewsQA_dev_sample.jsonl"}


OPTIONS = [({"text_field": "body"}, "text"), ({"text_field": "question"}, "text"), ({"text_field": "context"}, "text"),
           ({"text_field": "question", "pair_field": "context"}, "pair"),
           ({"text_field": "context", "pair_field": "question"}, "pair"), ({"pair_field": "title"}, "pair"),
           ({"text_field": "body", "pair_field": "title"}, "pair"), ({"id_field": "title"}, "id"),
           ({"label_field": "y"}, "label")]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "text", "imdb-tsv", "queries", "squad", "mrqa"])
@pytest.mark.parametrize("options, what", OPTIONS)
def test_every_option_is_honoured_or_refused(shared_data, tmp_path, fmt, options, what):
    path = _corpora(shared_data, tmp_path)[fmt]
    base = list(read_corpus(path, fmt=fmt, limit=4))
    try:
        got = list(read_corpus(path, fmt=fmt, limit=4, **options))
    except InputError as exc:  # names the option, or the field the option asks for that the records lack
        said = str(exc)
        assert any(f"--{k.replace('_', '-')}" in said or f"field '{v}'" in said for k, v in options.items()), \
            (options, said)
        assert "\n" not in said
        return
    assert len(got) == len(base)
    if what == "text":  # the text is the field asked for, alone
        field = options["text_field"]
        want = {"question": [r.text for r in base], "context": [r.text_pair for r in base]}.get(field) \
            or [f"text {i}" for i in range(4)]
        assert [r.text for r in got] == want and all(r.text_pair is None for r in got)
    elif what == "pair":
        field = options["pair_field"]
        assert all(r.text_pair is not None for r in got)
        if fmt in ("queries", "squad", "mrqa"):
            parts = {"question": [r.text for r in base], "context": [r.text_pair for r in base]}
            assert [r.text for r in got] == parts[options["text_field"]]
            assert [r.text_pair for r in got] == parts[field]
        else:
            assert [r.text_pair for r in got] == [f"title {i}" for i in range(4)]
    elif what == "id":
        assert [r.id for r in got] == [f"title {i}" for i in range(4)]
    else:
        assert [str(r.label) for r in got] == [str(i % 2) for i in range(4)]
