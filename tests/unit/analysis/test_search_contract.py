"""The shared exact search's contract: the GPU switch (FAISS with and without GPUs, faked), the index each kind
builds (defaults, the IVF training draw against a reference built here), a query the index cannot fill, ties
within 6 decimals that FAISS orders the other way, and the caller's choices reaching every block."""

from __future__ import annotations

import inspect
import logging

import faiss
import numpy as np
import pytest

from lookalike.analysis import search as search_mod
from lookalike.analysis.search import _order, build_index, knn_search, search_blocks, use_gpu
from lookalike.errors import StoreError


def test_use_gpu_follows_faiss_and_the_caller(monkeypatch, caplog):
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0, raising=False)
    with caplog.at_level(logging.WARNING, logger="lookalike.analysis.search"):
        assert use_gpu(None) is False and use_gpu(False) is False
        assert caplog.messages == []
        assert use_gpu(True) is False
    assert caplog.messages == ["--gpu asked for but FAISS sees no GPU; using the CPU"]
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2, raising=False)
    assert use_gpu(None) is True and use_gpu(True) is True and use_gpu(False) is False
    monkeypatch.delattr(faiss, "get_num_gpus")  # a FAISS built without GPU support
    assert use_gpu(None) is False and use_gpu(True) is False


def test_indexes_go_to_the_gpu_when_it_is_used(monkeypatch):
    moved = []
    monkeypatch.setattr(search_mod, "use_gpu", lambda gpu: gpu is not False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: moved.append(index) or index, raising=False)
    x = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    build_index(x, "flat")
    build_index(x, "ivf")
    assert [type(i).__name__ for i in moved] == ["IndexFlatIP", "IndexIVFFlat"]
    moved.clear()
    build_index(x, "flat", gpu=False)
    build_index(x, "hnsw")  # HNSW is CPU only in FAISS
    assert moved == []


def test_index_defaults_and_parameters():
    p = inspect.signature(build_index).parameters
    assert {k: p[k].default for k in ("kind", "nprobe", "hnsw_m", "ef_search", "seed", "nlist")} == \
        {"kind": "flat", "nprobe": 16, "hnsw_m": 32, "ef_search": 128, "seed": 0, "nlist": None}
    assert inspect.signature(knn_search).parameters["block_rows"].default == 8192
    assert inspect.signature(search_blocks).parameters["block_rows"].default == 8192
    x = np.random.default_rng(1).normal(size=(400, 4)).astype(np.float32)
    hnsw = build_index(x, "hnsw")
    assert hnsw.hnsw.efSearch == 128 and hnsw.hnsw.nb_neighbors(0) == 64  # level 0 holds 2 * M links
    ivf = build_index(x, "ivf")
    assert faiss.extract_index_ivf(ivf).nprobe == 16


@pytest.mark.parametrize("n, nlist", [(1000, 2), (300, None)])
def test_the_ivf_training_draw_is_the_documented_one(n, nlist):
    x = np.random.default_rng(2).normal(size=(n, 3)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    got = build_index(x, "ivf", nlist=nlist, seed=7)
    lists = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
    quantizer = faiss.IndexFlatIP(3)
    ref = faiss.IndexIVFFlat(quantizer, 3, lists, faiss.METRIC_INNER_PRODUCT)
    ref.train(x[np.random.default_rng(7).choice(n, size=min(n, 256 * lists), replace=False)])
    assert got.nlist == lists
    np.testing.assert_array_equal(faiss.vector_to_array(faiss.downcast_index(got.quantizer).codes),
                                  faiss.vector_to_array(quantizer.codes))


def test_the_ivf_list_count_grows_with_the_square_root():
    x = np.random.default_rng(3).normal(size=(40_000, 2)).astype(np.float32)
    assert build_index(x, "ivf").nlist == int(4 * np.sqrt(40_000))  # 800, under 40000 // 39


def test_a_query_the_index_cannot_fill_is_named():
    sims = np.array([[0.9, 0.8, 0.7], [0.9, 0.5, 0.1]], np.float32)
    idx = np.array([[3, 1, 2], [0, -1, -1]])
    with pytest.raises(StoreError) as err:
        _order(sims, idx, 2)
    assert str(err.value) == "query 1: the index returned fewer than k=2 neighbours"
    with pytest.raises(StoreError, match="query 1"):
        _order(sims, np.array([[3, 1, 2], [0, 4, -1]]), 2, np.array([9, 0]))
    s, r = _order(sims, np.array([[3, 1, 2], [0, 4, -1]]), 2)
    assert r.tolist() == [[3, 1], [0, 4]] and s.dtype == np.float32


def test_ties_within_six_decimals_are_ordered_by_row_whatever_faiss_returns():
    """FAISS keeps the larger similarity; within 6 decimals the rows decide. The larger similarities sit at the
    later rows here, so the tie must be followed through several fetches to reach rows 0..4."""
    sims = (0.5 + 6e-8 * (np.arange(60) // 8)).astype(np.float32)
    assert len(np.unique(sims)) == 8 and len(np.unique(np.round(sims, 6))) == 1
    bank = np.stack([sims, np.full(60, 0.1, np.float32)], axis=1)
    q = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    s, r = knn_search(bank, q, 5)
    assert r.tolist() == [[0, 1, 2, 3, 4]] * 2
    s, r = knn_search(bank, q, 5, exclude_rows=np.array([0, 3]))
    assert r.tolist() == [[1, 2, 3, 4, 5], [0, 1, 2, 4, 5]]
    s, r = search_blocks([(0, bank[:30]), (30, bank[30:])], q, 5, query_rows=np.array([0, 3]))
    assert r.tolist() == [[1, 2, 3, 4, 5], [0, 1, 2, 4, 5]]
    s, r = knn_search(bank, q, 5, exact_rows=False)  # similarities only: the same values
    np.testing.assert_array_equal(np.round(s, 6), np.full((2, 5), 0.5, np.float32))


def test_query_blocks_cover_every_query():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    q = rng.normal(size=(23, 3)).astype(np.float32)
    whole = knn_search(x, q, 4)
    for block_rows in (1, 5, 22, 23):
        parts = knn_search(x, q, 4, block_rows=block_rows)
        np.testing.assert_array_equal(parts[1], whole[1])


def test_block_searches_get_the_callers_choices(monkeypatch):
    seen = []
    real_search, real_build = search_mod.knn_search, search_mod.build_index

    def spy_search(*a, **kw):
        seen.append(("search", kw.get("block_rows"), kw.get("exact_rows"), kw.get("index") is not None))
        return real_search(*a, **kw)

    def spy_build(*a, **kw):
        seen.append(("build", a[1] if len(a) > 1 else kw.get("kind"), kw.get("gpu")))
        return real_build(*a, **kw)

    monkeypatch.setattr(search_mod, "knn_search", spy_search)
    monkeypatch.setattr(search_mod, "build_index", spy_build)
    x = np.random.default_rng(5).normal(size=(20, 3)).astype(np.float32)
    search_blocks([(0, x[:10]), (10, x[10:])], x[:4], 3, gpu=False, block_rows=3, exact_rows=False)
    assert seen == [("build", "flat", False), ("search", 3, False, True)] * 2


def test_build_index_defaults_are_a_flat_index_and_the_seed_0_draw():
    x = np.random.default_rng(6).normal(size=(1000, 3)).astype(np.float32)
    assert type(build_index(x)).__name__ == "IndexFlatIP"
    a, b = build_index(x, "ivf", nlist=2), build_index(x, "ivf", nlist=2, seed=0)
    np.testing.assert_array_equal(faiss.vector_to_array(faiss.downcast_index(a.quantizer).codes),
                                  faiss.vector_to_array(faiss.downcast_index(b.quantizer).codes))
