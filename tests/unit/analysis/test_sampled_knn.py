"""Sampled exact neighbours: a drawn point's neighbours are exactly the exhaustive search's (duplicates and ties
included) while the bank is streamed block by block; the draw is a pure function of (n, M, seed) and recorded;
agreement over two files of one draw estimates the all-points mean, and files of different draws are refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lookalike.analysis.agreement import knn_basis, knn_jaccards, representation_agreement
from lookalike.analysis.knn import KnnResult, knn_of_rows, knn_sampled, knn_self, load_knn, sample_rows
from lookalike.analysis.uncertainty import mean_interval
from lookalike.errors import InputError


def _points(n, dim, seed, copies=0, ties=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    for i in range(copies):  # exact duplicates: ties broken by row
        x[(7 * i + 3) % n] = x[(11 * i + 5) % n]
    if ties:  # many equal similarities: coarse grid
        x = np.round(x)
        x[np.all(x == 0, axis=1)] = 1
    return x


@given(n=st.integers(12, 160), dim=st.integers(2, 6), k=st.integers(1, 6), m=st.integers(1, 11),
       seed=st.integers(0, 5), copies=st.integers(0, 6), ties=st.booleans(), bank_rows=st.integers(7, 70))
def test_a_drawn_point_s_neighbours_are_the_exhaustive_search_s(n, dim, k, m, seed, copies, ties, bank_rows):
    x = _points(n, dim, seed, copies, ties)
    full = knn_self(x, k)
    s = knn_sampled(x, k, m, seed=seed, bank_rows=bank_rows)
    rows = sample_rows(n, m, seed)
    np.testing.assert_array_equal(s.neighbors, full.neighbors[rows])
    np.testing.assert_allclose(s.similarity, full.similarity[rows], atol=1e-6)
    assert list(s.ids) == [str(r) for r in rows]


def test_the_draw_is_a_pure_function_of_n_m_and_seed():
    a, b = sample_rows(1000, 50, 7), sample_rows(1000, 50, 7)
    np.testing.assert_array_equal(a, b)
    assert len(set(a)) == 50 and (np.diff(a) > 0).all() and a.min() >= 0 and a.max() < 1000
    assert not np.array_equal(a, sample_rows(1000, 50, 8))
    # the same numbers numpy's PCG64 gives: a fixed reference, so a change of generator is caught
    np.testing.assert_array_equal(sample_rows(10, 3, 0), np.sort(np.random.default_rng(0).choice(10, 3, False)))


@pytest.mark.parametrize("m, needle", [(0, "at least 1"), (40, "below the 40 points"), (41, "below")])
def test_a_draw_of_no_point_or_of_every_point_is_refused(m, needle):
    with pytest.raises(InputError, match=needle):
        knn_sampled(_points(40, 3, 0), 3, m)
    with pytest.raises(InputError, match="needs more than k"):
        knn_sampled(_points(40, 3, 0), 40, 5)


def test_the_bank_is_streamed_a_block_at_a_time():
    """The rows given to the search are never more than a block (plus a small last one joined to it)."""
    from support import block_spy

    seen = []

    x = _points(1000, 4, 1)
    s = knn_of_rows(block_spy(x, seen), np.array([3, 500, 999]), 5, bank_rows=128)
    assert max(seen) == 128 and len(seen) == 16  # two passes: gathering the drawn rows, then the search
    full = knn_self(x, 5)
    np.testing.assert_array_equal(s[1], full.neighbors[[3, 500, 999]])


def _result(x, k, m=None, seed=0) -> KnnResult:
    return knn_sampled(x, k, m, seed=seed) if m else knn_self(x, k)


def test_agreement_of_two_draws_estimates_the_exhaustive_mean(tmp_path):
    x = _points(3000, 8, 0)
    y = x + 0.6 * np.random.default_rng(1).normal(size=x.shape).astype(np.float32)  # a second "model"
    exhaustive = knn_jaccards(knn_self(x, 10), knn_self(y, 10), 10)
    a, b = knn_sampled(x, 10, 400, seed=3), knn_sampled(y, 10, 400, seed=3)
    a.save(tmp_path / "a.h5")
    b.save(tmp_path / "b.h5")
    a, b = load_knn(tmp_path / "a.h5"), load_knn(tmp_path / "b.h5")
    j = knn_jaccards(a, b, 10)
    lo, hi = mean_interval(j)
    assert len(j) == 400 and lo <= exhaustive.mean() <= hi
    # each drawn point's Jaccard is its exhaustive Jaccard
    np.testing.assert_allclose(j, exhaustive[sample_rows(3000, 400, 3)])
    assert representation_agreement(a, b, 10)["basis"] == "estimated from 400 of 3000 points (seed 3)"
    # a sampled file beside an exhaustive one: compared on the drawn points, and said so
    mixed = knn_jaccards(knn_self(x, 10), b, 10)
    np.testing.assert_allclose(mixed, exhaustive[sample_rows(3000, 400, 3)])
    assert "an exhaustive file compared on the draw" in knn_basis(knn_self(x, 10), b)
    assert knn_basis(knn_self(x, 10), knn_self(y, 10)) == "exhaustive: all 3000 points"


def test_files_of_different_draws_or_points_are_refused_naming_the_field():
    x = _points(300, 4, 0)
    a = knn_sampled(x, 5, 50, seed=1)
    with pytest.raises(InputError, match="sample.seed"):
        knn_jaccards(a, knn_sampled(x, 5, 50, seed=2), 5)
    with pytest.raises(InputError, match="sample.m"):
        knn_jaccards(a, knn_sampled(x, 5, 60, seed=1), 5)
    with pytest.raises(InputError, match="sample.n"):
        knn_jaccards(a, knn_sampled(x[:299], 5, 50, seed=1), 5)
    other = knn_self(_points(301, 4, 0), 5)  # an exhaustive file of other points
    with pytest.raises(InputError, match="universe_sha256"):
        knn_jaccards(a, other, 5)
    renamed = knn_self(x, 5)
    renamed.ids = np.array([f"p{i}" for i in range(300)])  # the same count, other ids
    with pytest.raises(InputError, match="universe_sha256"):
        knn_jaccards(renamed, a, 5)


def test_a_damaged_record_of_the_draw_is_refused(tmp_path):
    import h5py

    a = knn_sampled(_points(200, 4, 0), 3, 20, seed=1)
    a.meta["sample"].pop("universe_sha256")
    a.save(tmp_path / "a.h5")
    with pytest.raises(InputError, match="record of its draw"):
        load_knn(tmp_path / "a.h5")
    b = knn_sampled(_points(200, 4, 0), 3, 20, seed=1)
    b.save(tmp_path / "b.h5")
    with h5py.File(tmp_path / "b.h5", "r+") as f:  # neighbour rows past the universe's n
        f["neighbors"][0, 0] = 200
    with pytest.raises(InputError):
        load_knn(tmp_path / "b.h5")


@given(n=st.integers(12, 120), k=st.integers(1, 6), copies=st.integers(0, 8), ties=st.booleans(),
       bank_rows=st.integers(7, 50), query_rows=st.integers(5, 60))
def test_the_search_from_disk_is_the_in_memory_search_byte_for_byte(n, k, copies, ties, bank_rows, query_rows):
    """A store too large for memory is searched a query block at a time against its streamed shards: the same
    file content (neighbours, similarities, checksum) as the in-memory exact search, copies and ties included."""
    from lookalike.analysis import knn as knn_mod

    x = _points(n, 4, n, copies, ties)
    whole = knn_self(x, k)
    old = knn_mod.QUERY_ROWS
    knn_mod.QUERY_ROWS = query_rows
    try:
        disk = knn_self(x, k, in_memory_bytes=0, bank_rows=bank_rows)
    finally:
        knn_mod.QUERY_ROWS = old
    np.testing.assert_array_equal(disk.neighbors, whole.neighbors)
    assert disk.similarity.tobytes() == whole.similarity.tobytes()
    assert disk.content_sha256() == whole.content_sha256()
