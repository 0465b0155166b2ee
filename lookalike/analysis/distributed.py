"""kNN and deep-kNN OOD on Ray: the bank's blocks are searched in parallel by Ray tasks, each reading its block
straight from the store (on storage every node sees), and the driver merges the blocks' exact top-k by
(-similarity to 6 decimals, row) — the order of the local search, so the results are the local runner's, byte for
byte. A task whose worker dies is retried by Ray (`max_retries`); its block is searched again, the same way.

Memory on the driver: the queries and one top-k per block in flight (O(Q·d + blocks_in_flight·Q·k)).
"""

from __future__ import annotations

import logging

import numpy as np

from ..core.cluster import _connect, _import_ray
from ..core.store import Store, check_shard, open_store
from ..errors import StoreError
from .search import build_index, knn_search, merge_small, merge_top_k
from .vectors import _normalize, Vectors

log = logging.getLogger(__name__)

MAX_RETRIES = 3


def block_bounds(n: int, bank_rows: int, min_rows: int, drop: np.ndarray | None = None) -> list[tuple]:
    """The bank's blocks as the local search makes them, as (first store row, end store row, first bank row,
    bank rows): every `bank_rows` store rows, the rows in `drop` (sorted) left out, any block with fewer than
    `min_rows` bank rows joined to a neighbour (`knn.merge_small`, the local rule)."""
    items, kept = [], 0
    for lo in range(0, n, bank_rows):
        hi = min(lo + bank_rows, n)
        size = hi - lo - (int(np.searchsorted(drop, hi) - np.searchsorted(drop, lo)) if drop is not None else 0)
        if size:
            items.append((lo, hi, kept, size))
        kept += size
    return list(merge_small(items, lambda b: b[3], min_rows, lambda a, b: (a[0], b[1], a[2], a[3] + b[3])))


def search_block(store_path: str, lo: int, hi: int, first: int, queries: np.ndarray, own: np.ndarray | None, k: int,
                 exact_rows: bool = True, drop: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One bank block's exact top-k for the queries (run in a Ray worker): the store's shards holding rows lo..hi
    are checked against the manifest first, then read, normalised (the rows in `drop` left out) and searched;
    rows come back in the bank's numbering, from `first`."""
    store = open_store(store_path, verify=False)
    for s in store.manifest.shards:
        if s["row_start"] < hi and s["row_end"] > lo:
            problem = check_shard(store.path, s, store.dim, store.config)
            if problem:
                raise StoreError(f"{store.path / s['file']}: {problem}; the store changed while it was searched")
    block = _normalize(store.vectors_between(lo, hi), Vectors(store=store), lo)
    if drop is not None:
        a, b = np.searchsorted(drop, [lo, hi])
        keep = np.ones(len(block), bool)
        keep[drop[a:b] - lo] = False
        block = block[keep]
    s, r = knn_search(block, queries, k, index=build_index(block, "flat", gpu=None), exclude_rows=own,
                      exact_rows=exact_rows)
    return s, r + first


def _advance(progress, bound) -> None:
    if progress is not None:
        progress(bound[3])  # the block's bank rows


def ray_top_k(store: Store, queries: np.ndarray, query_rows: np.ndarray | None, k: int, *, bank_rows: int = 65536,
              address: str | None = None, workers: int | None = None, ray_init: dict | None = None,
              cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, exact_rows: bool = True,
              drop: np.ndarray | None = None, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, rows) of each query's k nearest bank points (the store's, excluding each query's own row
    when `query_rows` gives it), the blocks searched by Ray tasks and merged here in block order."""
    ray = _import_ray()
    started = _connect(ray, address, ray_init)
    try:
        remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(search_block).options(
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)
        q_ref = ray.put(np.ascontiguousarray(queries))
        bounds = block_bounds(len(store), bank_rows, k + (query_rows is not None), drop)
        limit = max(2, 2 * (workers or int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_worker, 1e-9))))
        pending, results = [], {}
        for i, (lo, hi, first, _) in enumerate(bounds):
            own = None if query_rows is None else np.where((query_rows >= lo) & (query_rows < hi),
                                                            query_rows - lo, -1)
            pending.append((i, remote.remote(str(store.path), lo, hi, first, q_ref, own, k, exact_rows, drop)))
            if len(pending) >= limit:
                j, ref = pending.pop(0)
                results[j] = ray.get(ref)
                _advance(progress, bounds[j])
        for j, ref in pending:
            results[j] = ray.get(ref)
            _advance(progress, bounds[j])
        top = None
        for j in range(len(bounds)):  # merged in block order, as the local search merges
            top = merge_top_k(top, *results.pop(j), k)
        return top
    finally:
        if started:
            ray.shutdown()
