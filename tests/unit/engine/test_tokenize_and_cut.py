"""The engine's tokenizing and batch cutting, each rule against its reference: ids, type ids and truncation flags
against transformers' own batch call (fast and slow tokenizers, pairs, both truncation sides); the batch cut against a
brute-force dynamic program written here; the ragged rows' dtypes and edge cases; a tokenizer panic named by record."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lookalike.data import Record
from lookalike.engine import batching
from lookalike.engine.batching import Encoded, batch_cost_for, cut_batches, token_budget_batches, tokenize
from lookalike.errors import InputError
from support import PanicException, panicking_encode

TEXTS = ["a short one", "the quick brown fox jumps over the lazy dog " * 3, "x", "",
         "one two three four five six seven eight nine ten eleven"]


@pytest.fixture(scope="module")
def fast_tok(minilm_dir):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(minilm_dir)


def _records(pairs: bool) -> list[Record]:
    return [Record(f"r{i}", t, TEXTS[-1 - i] if pairs else None) for i, t in enumerate(TEXTS)]


def _reference(tok, records, max_length):
    texts = [r.text for r in records]
    pairs = [r.text_pair for r in records] if records[0].text_pair is not None else None
    cut = tok(texts, pairs, truncation=True, max_length=max_length)
    full = tok(texts, pairs, truncation=False)
    return cut, [len(x) > max_length for x in full["input_ids"]]


@pytest.mark.parametrize("pairs", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("max_length", [6, 11, 64])
def test_tokenize_equals_transformers_batch_call(fast_tok, pairs, side, max_length):
    tok = copy.deepcopy(fast_tok)
    tok.truncation_side = side
    records = _records(pairs)
    enc = tokenize(tok, records, max_length)
    cut, truncated = _reference(tok, records, max_length)
    assert [r.tolist() for r in enc.input_ids] == cut["input_ids"]
    assert [r.tolist() for r in enc.token_type_ids] == cut["token_type_ids"]
    assert enc.truncated.tolist() == truncated
    assert enc.ids.dtype == np.int32 and enc.type_ids.dtype == np.int8 and enc.n_tokens.dtype == np.int32


def test_the_slow_tokenizer_gives_the_same_rows(fast_tok, minilm_dir):
    import transformers

    slow = transformers.BertTokenizer.from_pretrained(minilm_dir)
    assert not slow.is_fast
    for pairs in (False, True):
        records = _records(pairs)
        a, b = tokenize(slow, records, 9), tokenize(fast_tok, records, 9)
        assert [r.tolist() for r in a.input_ids] == [r.tolist() for r in b.input_ids]
        assert [r.tolist() for r in a.token_type_ids] == [r.tolist() for r in b.token_type_ids]
        assert a.truncated.tolist() == b.truncated.tolist() and a.truncated.any()


def test_a_model_without_type_ids_gets_none(fast_tok):
    tok = copy.deepcopy(fast_tok)
    tok.model_input_names = ["input_ids", "attention_mask"]
    assert tokenize(tok, _records(True), 16).type_ids is None
    assert tokenize(tok, [], 16).type_ids is None
    empty = tokenize(fast_tok, [], 16)  # a model that takes type ids: an empty array, not None
    assert len(empty) == 0 and empty.type_ids is not None and empty.type_ids.dtype == np.int8


def test_backends_are_made_once_per_length_and_side(fast_tok):
    tok = copy.deepcopy(fast_tok)
    tok.__dict__.pop("_lookalike_backends", None)  # made by the tests before (deepcopy copies it)
    own = tok.backend_tokenizer.truncation
    records = _records(False)
    short = tokenize(tok, records, 6)
    again = tokenize(tok, records, 6)
    longer = tokenize(tok, records, 64)
    assert short.n_tokens.max() == 6 and again.n_tokens.tolist() == short.n_tokens.tolist()
    assert longer.n_tokens.max() > 6  # another length is another backend, not the cached one
    made = tok.__dict__["_lookalike_backends"]
    assert set(made) == {(6, "right"), (64, "right")} and all(b is not None for b in made.values())
    assert batching._backend(tok, 6) is made[(6, "right")]
    assert tok.backend_tokenizer.truncation == own  # the caller's tokenizer keeps its own settings


def test_a_tokenizer_panic_names_the_record(fast_tok, monkeypatch):
    monkeypatch.setattr(batching, "_encode",
                        panicking_encode(batching, "BAD", "regex retry limit exceeded\nsecond line"))
    records = [Record("r0", "fine"), Record("r1", "fine too"), Record("r2", "BAD text"), Record("r3", "ok")]
    with pytest.raises(InputError) as err:
        tokenize(fast_tok, records, 16)
    e = err.value
    assert e.record == "record r2" and e.field == "text"
    assert str(e) == (
        "record r2: field 'text': the model's tokenizer fails on this text (regex retry limit exceeded); the tokenizer cannot read it: leave "
        "the record out, or use a model whose tokenizer can")
    assert isinstance(e.__cause__, PanicException)


def test_a_panic_only_in_the_batch_names_the_first_record(fast_tok, monkeypatch):
    def encode(backend, inputs, with_types):
        if len(inputs) > 1:
            raise PanicException("boom")
        return Encoded.from_lists([[1]], None)

    monkeypatch.setattr(batching, "_encode", encode)
    with pytest.raises(InputError) as err:
        tokenize(fast_tok, [Record("first", "a"), Record("second", "b")], 16)
    assert err.value.record == "record first"


def test_other_errors_are_not_taken_for_panics(fast_tok, monkeypatch):
    def encode(backend, inputs, with_types):
        raise KeyError("not a panic")

    monkeypatch.setattr(batching, "_encode", encode)
    with pytest.raises(KeyError):
        tokenize(fast_tok, [Record("a", "b")], 16)


# ----------------------------------------------------------------------------- ragged rows

def test_from_lists_types_and_default_flags():
    enc = Encoded.from_lists([[5, 6], [], [7]], [[0, 1], [], [1]])
    assert enc.ids.dtype == np.int32 and enc.offsets.dtype == np.int64 and enc.type_ids.dtype == np.int8
    assert enc.truncated.dtype == bool and enc.truncated.tolist() == [False, False, False]
    assert enc.n_tokens.dtype == np.int32 and enc.n_tokens.tolist() == [2, 0, 1]
    flagged = Encoded.from_lists([[1], [2]], None, [0, 3])
    assert flagged.truncated.dtype == bool and flagged.truncated.tolist() == [False, True]
    assert flagged.type_ids is None and flagged[0:1].type_ids is None  # slicing rows without type ids


def test_contiguous_slices_only():
    enc = Encoded.from_lists([[1], [2], [3]])
    with pytest.raises(ValueError, match=r"^Encoded takes contiguous slices only$"):
        enc[::2]
    assert len(enc[2:1]) == 0


def test_concat_of_one_part_is_that_part_and_unbased_parts_are_rebased():
    one = Encoded.from_lists([[1, 2]])
    assert Encoded.concat([one]) is one
    # a part whose offsets do not start at 0 (rows taken out of a larger flat array)
    raw = Encoded(np.array([9, 9, 9, 4, 5, 6], np.int32), np.array([3, 5, 6]), np.array([0, 0, 0, 1, 1, 0], np.int8),
                  np.array([False, True]))
    two = Encoded.from_lists([[7]], [[1]], [True])
    both = Encoded.concat([raw, two])
    assert [r.tolist() for r in both.input_ids] == [[4, 5], [6], [7]]
    assert both.type_ids.tolist() == [1, 1, 0, 1] and both.truncated.tolist() == [False, True, True]
    three = Encoded.concat([two, raw, two])
    assert [r.tolist() for r in three.input_ids] == [[7], [4, 5], [6], [7]]
    plain = Encoded.concat([Encoded.from_lists([[1]]), Encoded.from_lists([[2, 3]])])
    assert plain.type_ids is None and plain.offsets.tolist() == [0, 1, 3]


# ----------------------------------------------------------------------------- batch cut

def _reference_cut(lengths, budget, max_batch, cost):
    """Brute force over every batch start: least padded tokens + cost per batch; ties to the earliest start."""
    n = len(lengths)
    best, start = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            rows = j - i
            if rows > max_batch or (rows > 1 and rows * lengths[i] > budget):
                continue
            c = best[i] + cost + rows * lengths[i]
            if c < best[j]:
                best[j], start[j] = c, i
    cuts = [n]
    while cuts[-1] > 0:
        cuts.append(start[cuts[-1]])
    return cuts[::-1]


@given(st.lists(st.integers(1, 40), min_size=0, max_size=30), st.integers(1, 120), st.integers(1, 9),
       st.sampled_from([0.0, 1.0, 2.5, 8.0]))
def test_cut_is_the_least_cost_cut(lengths, budget, max_batch, cost):
    lengths = sorted(lengths, reverse=True)
    cuts = cut_batches(np.array(lengths, dtype=np.int64), budget, max_batch, cost)
    assert cuts.dtype == np.int64
    assert cuts.tolist() == _reference_cut(lengths, budget, max_batch, cost)


def test_cut_edges():
    empty = cut_batches(np.array([], dtype=np.int64), 100, 8, 1.0)
    assert empty.dtype == np.int64 and empty.tolist() == [0]
    # a row longer than the budget goes alone, and so does the next when two would not fit
    assert cut_batches(np.array([500, 90, 10, 10]), 100, 8, 0.0).tolist() == [0, 1, 2, 4]
    # equal lengths and costs tie: the earliest start wins, every time
    assert cut_batches(np.array([4, 4, 4, 4]), 16, 8, 0.0).tolist() == [0, 4]
    assert cut_batches(np.array([4, 4, 4, 4]), 8, 8, 0.0).tolist() == [0, 2, 4]


def test_batch_cost_is_a_64th_of_the_budget():
    assert batch_cost_for(6400) == 100.0 and batch_cost_for(100) == 1.5625


def test_batches_keep_window_order_among_equal_lengths_and_the_row_cap():
    enc = Encoded.from_lists([[1]] * 600)
    batches = token_budget_batches(enc, 10_000, pad_id=0)
    assert sorted(len(b.rows) for b in batches) == [88, 512]  # max_batch defaults to 512
    assert np.concatenate([b.rows for b in batches]).tolist() == list(range(600))  # a stable sort
    assert batches[1].input_ids.shape == (512, 1) and batches[0].token_type_ids is None
    assert batches[0].input_ids.dtype == np.int64 and batches[0].attention_mask.dtype == np.int64


def test_batches_use_the_default_cost_and_give_empty_rows_width_one():
    rng = np.random.default_rng(3)
    rows = [list(range(1, 1 + int(x))) for x in rng.integers(0, 30, 200)]
    enc = Encoded.from_lists(rows)
    default = token_budget_batches(enc, 256, pad_id=0)
    explicit = token_budget_batches(enc, 256, pad_id=0, batch_cost=batch_cost_for(256))
    other = token_budget_batches(enc, 256, pad_id=0, batch_cost=0.0)
    assert [b.rows.tolist() for b in default] == [b.rows.tolist() for b in explicit]
    assert [b.rows.tolist() for b in default] != [b.rows.tolist() for b in other]
    only_empty = token_budget_batches(Encoded.from_lists([[], []]), 256, pad_id=7)
    assert only_empty[0].input_ids.tolist() == [[7], [7]] and only_empty[0].attention_mask.tolist() == [[0], [0]]


class _EchoModel:
    """A stand-in model: a per-token output (batch, width) and a pooled one (batch, 2) whose width may equal the
    batch's."""
    pad_id = 0

    def run(self, outputs, input_ids, attention_mask, token_type_ids=None):
        per_token = input_ids.astype(np.float32)
        pooled = np.stack([input_ids.sum(1), attention_mask.sum(1)], axis=1).astype(np.float32)
        return [per_token if name == "tokens" else pooled for name in outputs]


def test_only_per_token_outputs_are_cut_to_each_rows_tokens():
    enc = Encoded.from_lists([[5, 6], [7], [8, 9]])  # batches of width 2: a pooled output of width 2 too
    tokens, pooled = batching.run_batched(_EchoModel(), enc, ["tokens", "pooled"], 64, per_token={"tokens"})
    assert [t.tolist() for t in tokens] == [[5, 6], [7], [8, 9]]
    assert [p.tolist() for p in pooled] == [[11, 2], [7, 1], [17, 2]]  # never taken for a token axis
    with pytest.raises(ValueError, match="per_token names outputs not asked for"):
        batching.run_batched(_EchoModel(), enc, ["pooled"], 64, per_token={"tokens"})


def test_the_slow_tokenizer_flags_only_rows_longer_than_the_limit_and_takes_no_types_when_asked(minilm_dir):
    import transformers

    slow = transformers.BertTokenizer.from_pretrained(minilm_dir)
    exact = len(slow("one two three")["input_ids"])  # [CLS] one two three [SEP]
    enc = tokenize(slow, [Record("a", "one two three"), Record("b", "one two three four")], exact)
    assert enc.truncated.tolist() == [False, True] and enc.n_tokens.tolist() == [exact, exact]
    slow.model_input_names = ["input_ids", "attention_mask"]
    assert tokenize(slow, [Record("a", "one two three")], exact).type_ids is None


def test_panic_text_is_its_first_line_cut_to_160():
    assert batching.panic_text(PanicException("")) == "a panic"
    assert batching.panic_text(PanicException("\n  \nsecond")) == "second"
    assert batching.panic_text(PanicException("x" * 300)) == "x" * 160


def test_type_ids_reach_the_model():
    seen = []

    class Model(_EchoModel):
        def run(self, outputs, input_ids, attention_mask, token_type_ids=None):
            seen.append(None if token_type_ids is None else token_type_ids.tolist())
            return super().run(outputs, input_ids, attention_mask, token_type_ids)

    batching.run_batched(Model(), Encoded.from_lists([[5, 6]], [[0, 1]]), ["pooled"], 64)
    assert seen == [[[0, 1]]]
