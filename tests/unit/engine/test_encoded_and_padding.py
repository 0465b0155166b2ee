"""The engine's ragged rows by hand: slices and concatenation are inverse, padding is exact, window ranges follow the
cut rule."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.engine.batching import Encoded, token_budget_batches
from lookalike.engine.plan import shard_aligned, window_ranges


def test_encoded_slices_and_concat_are_inverse():
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(1, 999, size=rng.integers(0, 9))) for _ in range(50)]
    enc = Encoded.from_lists(rows, [[1] * len(r) for r in rows], rng.random(50) < 0.3)
    parts = [enc[0:7], enc[7:7], enc[7:30], enc[30:]]
    back = Encoded.concat(parts)
    for name in ("ids", "offsets", "type_ids", "truncated"):
        np.testing.assert_array_equal(getattr(back, name), getattr(enc, name))
    assert [x.tolist() for x in back.input_ids] == [[int(v) for v in r] for r in rows]


def test_padding_is_vectorised_exactly():
    rng = np.random.default_rng(1)
    rows = [list(rng.integers(1, 999, size=rng.integers(1, 40))) for _ in range(200)]
    enc = Encoded.from_lists(rows, [[i % 2] * len(r) for i, r in enumerate(rows)])
    seen = []
    for b in token_budget_batches(enc, 300, pad_id=0, max_batch=64):
        for j, r in enumerate(b.rows):
            L = len(rows[r])
            assert b.input_ids[j, :L].tolist() == rows[r] and not b.input_ids[j, L:].any()
            assert b.attention_mask[j].tolist() == [1] * L + [0] * (b.input_ids.shape[1] - L)
            assert b.token_type_ids[j, :L].tolist() == [r % 2] * L
        seen += b.rows.tolist()
    assert sorted(seen) == list(range(200))


@pytest.mark.parametrize("start,size,boundary", [(0, 5, 7), (3, 4, 6), (10, 100, 25), (0, 3, 3)])
def test_window_ranges_are_the_cut_rule(start, size, boundary):
    total = 61
    assert list(window_ranges(start, total, size, boundary)) == \
        [(a, a + len(c)) for a, c in shard_aligned(range(start, total), start, size, boundary)]
