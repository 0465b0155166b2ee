"""The exact search every kNN and OOD computation shares: FAISS inner-product indexes (GPU when present), the
(-similarity to 6 decimals, row) order with ties closed past the k-th place, and the rule that joins a bank block
too small for the neighbours to its neighbour. Local and Ray searches both use these, so they give the same rows.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError, StoreError
from ..params import INDEXES

log = logging.getLogger(__name__)

TIE_DECIMALS = 6


def use_gpu(gpu: bool | None) -> bool:
    import faiss

    n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpu and n == 0:
        log.warning("--gpu asked for but FAISS sees no GPU; using the CPU")
    return bool(n) and gpu is not False


def _to_device(index, gpu: bool):
    import faiss

    if gpu:
        return faiss.index_cpu_to_all_gpus(index)
    return index


def build_index(x: np.ndarray, kind: str = "flat", *, gpu: bool | None = None, nlist: int | None = None,
                nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 128, seed: int = 0):
    """Inner-product index over normalised vectors (cosine)."""
    import faiss

    d = x.shape[1]
    on_gpu = use_gpu(gpu)
    if kind == "flat":
        index = _to_device(faiss.IndexFlatIP(d), on_gpu)
    elif kind == "ivf":
        if nlist is not None and nlist > len(x):
            raise InputError(f"ivf: nlist={nlist} clusters need at least as many points (have {len(x)})")
        # FAISS wants >= 39 training points per centroid; tiny stores get few lists (1 list = exact search)
        nlist = nlist or max(1, min(int(4 * np.sqrt(len(x))), len(x) // 39))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index = _to_device(index, on_gpu)
        rng = np.random.default_rng(seed)
        sample = x[rng.choice(len(x), size=min(len(x), 256 * nlist), replace=False)]
        index.train(sample)
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    elif kind == "hnsw":  # CPU only in FAISS
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
    else:
        raise InputError(f"unknown index {kind!r} (known: {', '.join(INDEXES)})")
    index.add(x)
    return index


def _order(sims: np.ndarray, idx: np.ndarray, k: int, self_rows: np.ndarray | None = None):
    """Drop each query's own row (if given) and FAISS's -1 fillers, order by (-similarity, row), keep k."""
    ok = idx >= 0
    if self_rows is not None:
        ok &= idx != self_rows[:, None]
    short = ok.sum(1) < k
    if short.any():
        raise StoreError(f"query {int(np.flatnonzero(short)[0])}: the index returned fewer than k={k} neighbours")
    s = np.where(ok, sims, -np.inf)
    i = np.where(ok, idx, np.iinfo(np.int64).max)
    # similarities equal to TIE_DECIMALS places are ties (BLAS blocking perturbs the last bits of exact
    # duplicates differently), broken by row index
    order = np.lexsort((i, -np.round(s, TIE_DECIMALS)), axis=-1)[:, :k]
    return np.take_along_axis(s, order, 1).astype(np.float32), np.take_along_axis(i, order, 1)


TIE_BUDGET = 1 << 24  # similarities held at once while a tie at the k-th place is closed (about 200 MB)


def knn_search(x: np.ndarray, queries: np.ndarray, k: int, *, index=None, gpu: bool | None = None,
               block_rows: int = 8192, exclude_rows: np.ndarray | None = None, exact_rows: bool = True):
    """(similarity, rows) of the k nearest database rows for each query, in query blocks.

    exclude_rows: for self-search, each query's own database row (dropped from its results).
    exact_rows: close ties at the k-th place so the rows are the (-similarity, row) order's, exactly; False when
    only the similarities matter (deep-kNN scores), which never depend on the tie.
    """
    index = index if index is not None else build_index(x, "flat", gpu=gpu)
    n = len(queries)
    sims = np.empty((n, k), dtype=np.float32)
    rows = np.empty((n, k), dtype=np.int64)
    base = k + (exclude_rows is not None)
    for lo in range(0, n, block_rows):
        hi = min(lo + block_rows, n)
        self_rows = exclude_rows[lo:hi] if exclude_rows is not None else None
        fetch = min(base + 4, index.ntotal)
        s, i = index.search(queries[lo:hi], fetch)
        sims[lo:hi], rows[lo:hi] = _order(s, i, k, self_rows)
        if exact_rows:
            _close_ties(index, queries[lo:hi], s[:, -1], fetch, k, self_rows, sims[lo:hi], rows[lo:hi])
    return sims, rows


def _close_ties(index, queries, last, fetch, k, self_rows, sims, rows) -> None:
    """A tie at the k-th place may continue past what was fetched (near-equal vectors): fetch more for those
    queries until the tie is closed, so the (-similarity, row) order is exact and deterministic. The open queries
    are searched in groups of at most TIE_BUDGET similarities, so memory stays bounded whatever the fetch."""
    while fetch < index.ntotal:
        open_tie = np.flatnonzero(np.round(last, TIE_DECIMALS) >= np.round(sims[:, -1], TIE_DECIMALS))
        if len(open_tie) == 0:
            return
        fetch = min(fetch * 2, index.ntotal)
        last = np.full(len(queries), -np.inf, dtype=np.float32)
        step = max(1, TIE_BUDGET // fetch)
        for a in range(0, len(open_tie), step):
            part = open_tie[a:a + step]
            s2, i2 = index.search(queries[part], fetch)
            sims[part], rows[part] = _order(s2, i2, k, self_rows[part] if self_rows is not None else None)
            last[part] = s2[:, -1]


def merge_small(items, size, min_rows: int, join):
    """Items in order, each one smaller than `min_rows` joined to its neighbour (the one before, or the next
    when it comes first): the bank blocks every search merges the same way, locally or on Ray."""
    held = None
    for item in items:
        if held is None:
            held = item
        elif size(held) < min_rows or size(item) < min_rows:
            held = join(held, item)
        else:
            yield held
            held = item
    if held is not None:
        yield held


def _bank_chunks(blocks, min_rows: int):
    """The bank's (first row, block) blocks with any block too small for the neighbours joined to a neighbour
    (two blocks held at most)."""
    return merge_small(blocks, lambda b: len(b[1]), min_rows, lambda a, b: (a[0], np.concatenate([a[1], b[1]])))




def merge_top_k(running, s: np.ndarray, r: np.ndarray, k: int):
    """The running (similarities, rows) and a block's, merged into the top k by (-similarity to 6 decimals, row):
    the order one search over every block at once gives."""
    if running is None:
        return s, r
    return _order(np.concatenate([running[0], s], 1), np.concatenate([running[1], r], 1), k)


def search_blocks(blocks, queries: np.ndarray, k: int, *, query_rows: np.ndarray | None = None,
                  gpu: bool | None = None, block_rows: int = 8192, exact_rows: bool = True, progress=None):
    """(similarities, rows) of each query's k nearest rows of a bank given as (first row, block) blocks, each
    searched exactly and merged (`merge_top_k`); `query_rows`: each query's own bank row, excluded. Memory: the
    queries, one block and the n_queries × k result. `progress(rows)` is called after each block."""
    top = None
    for lo, block in blocks:
        own = None if query_rows is None else np.where((query_rows >= lo) & (query_rows < lo + len(block)),
                                                       query_rows - lo, -1)
        s, r = knn_search(block, queries, k, index=build_index(block, "flat", gpu=gpu), block_rows=block_rows,
                          exclude_rows=own, exact_rows=exact_rows)
        top = merge_top_k(top, s, r + lo, k)
        if progress is not None:
            progress(len(block))
    return top
