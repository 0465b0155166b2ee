"""analysis/search.py, exactly (survivors of the mutation run): the device choice and its warning, the index
kinds and their parameters, the (-similarity, row) order with self and FAISS fillers dropped, the tie closing,
and the small-block rule."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lookalike.analysis import search as S
from lookalike.errors import InputError, StoreError


def test_the_device_is_chosen_inside_and_a_missing_gpu_is_said(caplog):
    with caplog.at_level(logging.WARNING):
        assert S.use_gpu(True) is False  # no GPU here: the CPU, with one warning
    assert caplog.messages == ["--gpu asked for but FAISS sees no GPU; using the CPU"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert S.use_gpu(None) is False and S.use_gpu(False) is False
    assert caplog.messages == []


def _unit(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_index_kinds_and_their_parameters():
    import faiss

    x = _unit(2000, 8)
    flat = S.build_index(x, "flat")
    assert isinstance(flat, faiss.IndexFlatIP) and flat.ntotal == 2000
    ivf = S.build_index(x, "ivf", nprobe=3)
    assert ivf.nlist == min(int(4 * np.sqrt(2000)), 2000 // 39) == 51 and ivf.nprobe == 3 and ivf.is_trained
    assert S.build_index(x[:30], "ivf").nlist == 1  # fewer than 39 points per list: one list, an exact search
    assert S.build_index(x, "ivf", nlist=2000).nlist == 2000  # as many lists as points is allowed
    with pytest.raises(InputError, match="nlist=2001 clusters need at least as many points \\(have 2000\\)"):
        S.build_index(x, "ivf", nlist=2001)
    hnsw = S.build_index(x, "hnsw", hnsw_m=8, ef_search=17)
    assert hnsw.hnsw.efSearch == 17 and hnsw.ntotal == 2000
    with pytest.raises(InputError, match="unknown index 'lsh' \\(known: flat, ivf, hnsw\\)"):
        S.build_index(x, "lsh")


def test_the_order_drops_self_and_fillers_and_breaks_ties_by_row():
    sims = np.array([[0.9, 0.5, 0.5000001, 0.2, -1.0]], np.float32)
    idx = np.array([[7, 3, 1, 4, -1]])
    s, r = S._order(sims, idx, 3, self_rows=np.array([7]))
    assert r.tolist() == [[1, 3, 4]]  # self (7) and the -1 filler dropped; 0.5 and 0.5000001 tie: row 1 first
    assert s.dtype == np.float32 and s.tolist()[0][2] == pytest.approx(0.2)
    s, r = S._order(sims, idx, 4)
    assert r.tolist() == [[7, 1, 3, 4]]
    with pytest.raises(StoreError, match="query 0: the index returned fewer than k=4 neighbours"):
        S._order(sims, idx, 4, self_rows=np.array([7]))


def test_a_tie_past_what_was_fetched_is_closed():
    """30 copies of one vector around a query: the k nearest are the copies with the smallest rows, however far
    the first fetch reached."""
    base = _unit(200, 6, 1)
    x = np.concatenate([base, np.repeat(base[:1], 30, axis=0)])
    q = base[:1]
    s, r = S.knn_search(x, q, 5)
    assert r.tolist() == [[0, 200, 201, 202, 203]]
    s, r = S.knn_search(x, q, 5, exclude_rows=np.array([0]))
    assert r.tolist() == [[200, 201, 202, 203, 204]] and np.allclose(s, 1.0)
    s, r = S.knn_search(x, np.repeat(q, 3, axis=0), 5, block_rows=2)  # query blocks: the same answer each
    assert (r == [0, 200, 201, 202, 203]).all()


def test_small_blocks_join_a_neighbour():
    sizes = [5, 5, 1, 5, 2]
    merged = list(S.merge_small(iter(sizes), lambda b: b, 3, lambda a, b: a + b))
    assert merged == [5, 6, 7]
    assert list(S.merge_small(iter([3, 3]), lambda b: b, 3, lambda a, b: a + b)) == [3, 3]  # exactly min: kept
    assert list(S.merge_small(iter([1, 1, 5]), lambda b: b, 3, lambda a, b: a + b)) == [7]
