"""Property-based tests (hypothesis) of everything fed by users: the corpus readers, the experiment config, error
lists, the JSON parser, the output ledger; and of the two algorithms whose shortcuts must not change a result: the
exact long-text cut and the exact self-kNN with duplicates.

The readers' property: whatever the bytes, a reader yields records or raises InputError naming the file; never
another exception, never a silent partial read. Examples are derandomized so CI is reproducible; run with
`--hypothesis-seed=random` (or HYPOTHESIS_PROFILE=explore) to search further."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookalike.errors import InputError


SUFFIXES = [".jsonl", ".json", ".csv", ".tsv", ".txt", ".jsonl.gz", ".json.gz"]
json_scalars = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=True) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=30)


def _in_tmp(name: str, data: bytes) -> tuple[tempfile.TemporaryDirectory, Path]:
    d = tempfile.TemporaryDirectory()
    p = Path(d.name) / name
    if name.endswith(".gz"):
        import gzip

        data = gzip.compress(data)
    p.write_bytes(data)
    return d, p


def _read_all(path: Path, **kw):
    from lookalike.data import read_corpus

    try:
        return list(read_corpus(path, **kw))
    except InputError as exc:
        assert str(path.name) in str(exc) or path.name in str(getattr(exc, "path", "")), str(exc)
        return None


# ---- readers
@given(data=st.binary(max_size=2000), suffix=st.sampled_from(SUFFIXES))
def test_any_bytes_are_records_or_one_input_error(data, suffix):
    d, p = _in_tmp("corpus" + suffix, data)
    with d:
        _read_all(p)


@given(rows=st.lists(json_values, max_size=6), suffix=st.sampled_from([".jsonl", ".json"]),
       text_field=st.sampled_from(["text", "t", ""]), id_field=st.sampled_from([None, "id", "x"]))
def test_any_json_rows_are_records_or_one_input_error(rows, suffix, text_field, id_field):
    data = (json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows)).encode()
    d, p = _in_tmp("corpus" + suffix, data)
    with d:
        recs = _read_all(p, text_field=text_field or "text", id_field=id_field)
        if recs is not None:  # what is read is what was there: one record per row, strings throughout
            assert len(recs) == len(rows)
            assert len({r.id for r in recs}) == len(recs)
            assert all(isinstance(r.text, str) and isinstance(r.id, str) for r in recs)


@given(rows=st.lists(st.fixed_dictionaries({"id": json_scalars, "text": json_scalars}), min_size=1, max_size=6))
def test_well_formed_rows_are_read_back_exactly(rows):
    """Rows whose ids and texts are unique non-empty strings are read back as they were written."""
    rows = [{"id": f"r{i}-{r['id']}", "text": str(r["text"]) or "x"} for i, r in enumerate(rows)]
    d, p = _in_tmp("c.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    with d:
        recs = _read_all(p)
        if any("\0" in r["id"] for r in rows):
            assert recs is None
        else:
            assert [(r.id, r.text) for r in recs] == [(r["id"], r["text"]) for r in rows]


squad_qa = st.fixed_dictionaries({"id": json_scalars, "question": json_scalars, "answers": json_values},
                                 optional={"is_impossible": json_scalars})
squad_doc = st.fixed_dictionaries({"data": st.lists(st.fixed_dictionaries({"paragraphs": st.lists(
    st.fixed_dictionaries({"context": json_scalars, "qas": st.lists(squad_qa, max_size=3) | json_values}),
    max_size=2) | json_values}), max_size=2) | json_values}, optional={"version": st.just("v2.0")})


@given(doc=squad_doc)
def test_any_squad_shape_is_records_or_one_input_error(doc):
    d, p = _in_tmp("squad.json", json.dumps(doc).encode())
    with d:
        _read_all(p, fmt="squad")


# every reader of a QA layout gets a strategy of its own shapes, each field sometimes of the wrong type: the reader
# yields records whose fields are strings (and answers inside their context) or raises one InputError
ints = st.integers(-5, 60)
spans = st.lists(ints, min_size=0, max_size=3) | json_values
newsqa_doc = json_values | st.lists(json_values, max_size=2) | st.fixed_dictionaries({"data": st.lists(
    st.fixed_dictionaries({"storyId": json_scalars, "text": st.text(max_size=60) | json_scalars,
                           "questions": st.lists(st.fixed_dictionaries(
                               {"q": json_scalars}, optional={"consensus": st.fixed_dictionaries(
                                   {"s": ints}, optional={"e": ints}) | json_values}), max_size=3) | json_values},
                          optional={"type": st.sampled_from(["train", "dev"]) | json_scalars}) | json_values,
    max_size=3) | json_values})
mrqa_row = st.fixed_dictionaries({"context": st.text(max_size=60) | json_scalars, "qas": st.lists(
    st.fixed_dictionaries({"qid": json_scalars, "question": json_scalars},
                          optional={"detected_answers": st.lists(st.fixed_dictionaries(
                              {"char_spans": st.lists(spans, max_size=2) | json_values}) | json_values, max_size=2)
                                    | json_values, "answers": st.lists(json_scalars, max_size=2) | json_values}),
    max_size=3) | json_values}) | st.fixed_dictionaries({"header": json_values}) | json_values
queries_doc = st.fixed_dictionaries({"queries": st.lists(st.fixed_dictionaries(
    {"id": json_scalars, "question": json_scalars, "context": st.text(max_size=40) | json_scalars}) | json_values,
    max_size=4) | json_values})
ground_truth = st.dictionaries(st.text(max_size=4), st.fixed_dictionaries(
    {}, optional={"answers": st.lists(json_scalars, max_size=2) | json_values, "is_impossible": json_scalars})
    | json_values, max_size=4) | json_values


def _qa_records_are_honest(recs):
    if recs is None:
        return
    for r in recs:
        assert isinstance(r.id, str) and isinstance(r.text, str) and isinstance(r.text_pair, str), r
        assert all(isinstance(a, str) for a in r.answers), r
        for a, s in zip(r.answers, r.answer_starts):
            assert s == -1 or r.text_pair[s:s + len(a)] == a, r


@given(doc=newsqa_doc)
def test_any_newsqa_json_shape_is_records_or_one_input_error(doc):
    d, p = _in_tmp("newsqa.json", json.dumps(doc).encode())
    with d:
        _qa_records_are_honest(_read_all(p, fmt="newsqa-json"))


@given(rows=st.lists(st.fixed_dictionaries({"story_id": st.text(max_size=5), "question": st.text(max_size=20),
                                            "story_text": st.text(max_size=40),
                                            "answer_char_ranges": st.lists(st.sampled_from(
                                                ["1:3", "0:5", "3:1", "1:x", "a:b:c", ":", "None", "7:400",
                                                 "-2:3", "2:"]), max_size=3).map(",".join)}), max_size=5))
def test_any_newsqa_csv_ranges_are_records_or_one_input_error(rows):
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, ["story_id", "question", "story_text", "answer_char_ranges"])
    w.writeheader()
    w.writerows(rows)
    d, p = _in_tmp("newsqa.csv", buf.getvalue().encode())
    with d:
        _qa_records_are_honest(_read_all(p, fmt="newsqa-csv"))


@given(rows=st.lists(mrqa_row, max_size=4))
def test_any_mrqa_shape_is_records_or_one_input_error(rows):
    d, p = _in_tmp("mrqa.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    with d:
        _qa_records_are_honest(_read_all(p, fmt="mrqa"))


@given(queries=queries_doc, truth=st.none() | ground_truth)
def test_any_queries_layout_is_records_or_one_input_error(queries, truth):
    d = tempfile.TemporaryDirectory()
    folder = Path(d.name)
    (folder / "queries.json").write_text(json.dumps(queries))
    if truth is not None:
        (folder / "ground_truth.json").write_text(json.dumps(truth))
    with d:
        from lookalike.data import read_corpus

        try:
            recs = list(read_corpus(folder / "queries.json", fmt="queries"))
        except InputError as exc:  # names one of the layout's two files
            assert "queries.json" in str(exc) or "ground_truth.json" in str(exc), str(exc)
            recs = None
        _qa_records_are_honest(recs)


@pytest.mark.parametrize("name, content, needle", [
    ("n.json", [{"storyId": "s"}], "no top-level 'data' list"),
    ("n.csv", "story_id,question,story_text,answer_char_ranges\ns,q?,some story,1:x\n", "START:END"),
    ("m.jsonl", {"context": "abc", "qas": [{"qid": "q", "question": "?", "detected_answers": [
        {"char_spans": [[1]]}]}]}, "[start, end] pair"),
    ("queries.json", {"queries": [{"id": "a", "question": "q?", "context": 5}]}, "field 'context'"),
])
def test_the_probe_s_reader_cases_are_one_line(tmp_path, name, content, needle):
    fmt = {"n.json": "newsqa-json", "n.csv": "newsqa-csv", "m.jsonl": "mrqa", "queries.json": "queries"}[name]
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else
                 json.dumps(content) + ("\n" if name.endswith("jsonl") else ""))
    with pytest.raises(InputError, match=re.escape(needle)):
        from lookalike.data import read_corpus

        list(read_corpus(p, fmt=fmt))


@given(cells=st.lists(st.lists(st.text(max_size=20), min_size=1, max_size=4), max_size=6),
       delimiter=st.sampled_from([",", "\t"]))
def test_any_delimited_table_is_records_or_one_input_error(cells, delimiter):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter)
    w.writerow(["id", "text"][: max(1, len(cells[0]) if cells else 1)])
    for row in cells:
        w.writerow(row)
    d, p = _in_tmp("t.csv" if delimiter == "," else "t.tsv", buf.getvalue().encode())
    with d:
        _read_all(p)


# ---- JSON as lookalike parses it
@given(obj=json_values)
def test_parse_json_reads_back_what_json_wrote(obj):
    from lookalike.files import parse_json

    text = json.dumps(obj)
    assert json.dumps(parse_json(text, Path("x.json"))) == text


@given(obj=st.dictionaries(st.text(max_size=5), json_values, min_size=1, max_size=4), data=st.data())
def test_a_repeated_key_is_always_refused(obj, data):
    from lookalike.files import parse_json

    key = data.draw(st.sampled_from(sorted(obj)))
    body = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items())
    text = "{" + body + f", {json.dumps(key)}: 0" + "}"
    with pytest.raises(InputError, match="appears twice"):
        parse_json(text, Path("x.json"))


@given(depth=st.integers(1, 200_000), kind=st.sampled_from(["[", '{"a":']))
def test_any_nesting_is_a_value_or_one_input_error(depth, kind):
    from lookalike.files import parse_json

    close = "]" if kind == "[" else "}"
    text = kind * depth + ("1" if kind != "[" else "") + close * depth
    try:
        parse_json(text, Path("x.json"))
    except InputError as exc:
        assert "nested too deeply" in str(exc)


# ---- experiment config
config_keys = st.sampled_from(["title", "description", "out", "models", "datasets", "steps", "name", "base",
                               "like", "variant", "qa", "sentiment", "finetune", "embed", "knn", "k", "sweep",
                               "representation", "path", "every", "normalize", "keep_layers", "quantize"])
config_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                             | st.dictionaries(config_keys | st.text(max_size=6), inner, max_size=4),
                             max_leaves=25)


@given(cfg=st.dictionaries(config_keys, config_values, max_size=6))
def test_any_experiment_config_is_parsed_or_one_input_error(cfg):
    from lookalike.experiment.config import load_config, parse_config

    d, p = _in_tmp("exp.yaml", yaml.safe_dump(cfg, allow_unicode=True).encode())
    with d:
        try:
            parse_config(load_config(p), p.parent)
        except InputError:
            pass


@given(text=st.text(max_size=400))
def test_any_yaml_text_is_parsed_or_one_input_error(text):
    from lookalike.experiment.config import load_config, parse_config

    d, p = _in_tmp("exp.yaml", text.encode("utf-8", "surrogatepass"))
    with d:
        try:
            parse_config(load_config(p), p.parent)
        except InputError:
            pass


# ---- error lists
@given(obj=json_values | st.fixed_dictionaries({"kind": st.just("lookalike.errors"), "ids": json_values,
                                                "error_ids": json_values}, optional={"universe_sha256": json_values}))
def test_any_error_file_is_an_error_set_or_one_input_error(obj):
    from lookalike.analysis.scoring import load_errors

    d, p = _in_tmp("errors.json", json.dumps(obj).encode())
    with d:
        try:
            es = load_errors(p)
        except InputError:
            return
        assert all(isinstance(i, str) for i in es.ids)
        if es.universe is not None:
            assert set(es.ids) <= set(es.universe)


# ---- the output ledger
names = st.sampled_from(["a.json", "b.txt", "c.h5", "d.csv"])


@given(written=st.lists(names, min_size=1, max_size=4, unique=True), edits=st.dictionaries(names, st.sampled_from(
    ["same-size", "append", "truncate", "replace", "delete"]), max_size=4), foreign=st.lists(names, max_size=2))
def test_the_ledger_refuses_exactly_the_files_it_did_not_write(written, edits, foreign):
    from lookalike.outputs import OutputError, OwnedFolder

    with tempfile.TemporaryDirectory() as d:
        folder = OwnedFolder(Path(d) / "out")
        for n in foreign:  # a user's files, there before lookalike
            folder.folder.mkdir(exist_ok=True)
            (folder.folder / n).write_bytes(b"the user's own " + n.encode())
        mine = []
        for n in written:
            try:
                folder.write_text(n, f"lookalike wrote {n}\n")
                mine.append(n)
            except OutputError:
                assert n in foreign
        assert all((folder.folder / n).read_bytes().startswith(b"the user's") for n in foreign)
        changed = set()
        for n, how in edits.items():
            p = folder.folder / n
            if not p.exists():
                continue
            data = p.read_bytes()
            if how == "same-size":
                p.write_bytes(bytes([data[0] ^ 1]) + data[1:])
            elif how == "append":
                p.write_bytes(data + b"x")
            elif how == "truncate":
                p.write_bytes(data[:-1])
            elif how == "replace":
                p.unlink()
                p.write_bytes(data)  # the same bytes: still lookalike's content, so still ours
                continue
            else:
                p.unlink()
                continue
            changed.add(n)
        for n in set(written) | set(foreign):
            expect_refused = (n in foreign and n not in mine) or n in changed
            if not (folder.folder / n).exists():
                expect_refused = False
            try:
                folder.claim(n)
                assert not expect_refused, n
            except OutputError as exc:
                assert expect_refused, (n, str(exc))
                assert n in str(exc)


# ---- the exact long-text cut
def _backend(max_length: int, side: str):
    from tokenizers import Tokenizer

    from lookalike.models import minilm_path

    tok = Tokenizer.from_file(str(Path(minilm_path()) / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length, stride=0, strategy="longest_first", direction=side)
    return tok


_BACKENDS: dict = {}
words = st.sampled_from(["the", "film", "was", "un", "believ", "ably", "good", "!", "...", "naïve", "東京", "🙂",
                         "don't", "e.g.", "x" * 30, "12,345", "\u00ad", "Ωmega", "co-op"])
spaces = st.sampled_from([" ", "  ", "\n", "\t", "\u3000", "\xa0", "\r\n", " \u200b "])


@st.composite
def long_texts(draw, min_chars: int):
    parts = draw(st.lists(st.tuples(words, spaces), min_size=1, max_size=60))
    unit = "".join(w + s for w, s in parts)
    text = unit * (min_chars // max(len(unit), 1) + 1)
    tail = draw(st.lists(st.tuples(words, spaces), max_size=20))
    # a run of characters with no tokens (white space, zero-width, soft hyphens) at either end: the first piece
    # tried then holds too few tokens and the cut must widen
    filler = draw(st.sampled_from([" ", "\u200b", "\u00ad", "\n\n", "\u200b "])) * draw(st.integers(0, 2 * min_chars))
    where = draw(st.sampled_from(["start", "end", "both"]))
    body = text + "".join(w + s for w, s in tail)
    return (filler if where != "end" else "") + body + (filler if where != "start" else "")


@settings(max_examples=int(os.environ.get("LOOKALIKE_CUT_EXAMPLES", 12)))
@given(max_length=st.sampled_from([5, 8, 16]), side=st.sampled_from(["right", "left"]), data=st.data())
def test_the_long_text_cut_gives_the_full_tokenization_ids(max_length, side, data):
    from lookalike.engine.cut import LONG_FACTOR, cut_long

    key = (max_length, side)
    backend = _BACKENDS.setdefault(key, _backend(max_length, side))
    need = LONG_FACTOR * max_length + 1025
    kind = data.draw(st.sampled_from(["text", "pair-long-first", "pair-long-second", "pair-both"]))
    long_ = data.draw(long_texts(need))
    short = data.draw(st.text(max_size=40))
    other = data.draw(long_texts(need))
    x = {"text": long_, "pair-long-first": (long_, short), "pair-long-second": (short, long_),
         "pair-both": (long_, other)}[kind]
    inputs = [x, "a short one"]
    cut = cut_long(backend, inputs)
    full = backend.encode_batch(inputs, add_special_tokens=True)
    mine = backend.encode_batch(cut, add_special_tokens=True)
    for f, m in zip(full, mine):
        assert m.ids == f.ids and m.type_ids == f.type_ids
        assert (len(m.overflowing) > 0) == (len(f.overflowing) > 0)  # still counted as truncated


# ---- the exact self-kNN with duplicates
@given(distinct=st.integers(1, 25), n=st.integers(2, 90), dim=st.integers(2, 8), k=st.integers(1, 12),
       seed=st.integers(0, 2 ** 31), bank_rows=st.integers(3, 64), block_rows=st.integers(1, 50))
def test_exact_self_knn_equals_brute_force_whatever_the_copies(distinct, n, dim, k, seed, bank_rows, block_rows):
    from lookalike.analysis.knn import TIE_DECIMALS, knn_self_exact

    rng = np.random.default_rng(seed)
    base = rng.standard_normal((distinct, dim)).astype(np.float32)
    x = base[rng.integers(0, distinct, n)]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    k = min(k, n - 1)
    if k < 1:
        return
    sims, rows = knn_self_exact(x, k, bank_rows=bank_rows, block_rows=block_rows)
    s = x.astype(np.float64) @ x.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)
    for i in range(n):
        want = np.lexsort((np.arange(n), -np.round(s[i], TIE_DECIMALS)))[:k]
        got = rows[i]
        assert i not in got and len(set(got.tolist())) == k
        # the same neighbour set in the same order, up to float32 rounding at the 6th decimal
        if not np.array_equal(got, want):
            assert np.allclose(np.sort(s[i][got]), np.sort(s[i][want]), atol=2e-6), (i, got, want)
        assert np.allclose(sims[i], s[i][got], atol=1e-5)


# ---- the padding-minimising batch cut
@given(lengths=st.lists(st.integers(1, 80), min_size=1, max_size=25), budget=st.integers(80, 600),
       max_batch=st.integers(1, 16), cost=st.integers(0, 60))
def test_the_batch_cut_is_the_cheapest_within_the_budget(lengths, budget, max_batch, cost):
    import functools

    from lookalike.engine.batching import cut_batches

    L = sorted(lengths, reverse=True)
    cuts = cut_batches(np.array(L), budget, max_batch, float(cost))
    spans = list(zip(cuts[:-1].tolist(), cuts[1:].tolist()))
    assert cuts[0] == 0 and cuts[-1] == len(L) and all(a < b for a, b in spans)
    for a, b in spans:  # within the budget (a row longer than the budget goes alone) and the row cap
        assert b - a <= max_batch and ((b - a) * L[a] <= budget or b - a == 1)

    @functools.lru_cache(None)
    def least(i):  # brute force over every contiguous cut
        if i == len(L):
            return 0
        cap = max(1, min(max_batch, budget // L[i]))
        return min(least(j) + (j - i) * L[i] + cost for j in range(i + 1, min(len(L), i + cap) + 1))

    assert sum((b - a) * L[a] + cost for a, b in spans) == least(0)
