"""Self-kNN by cosine similarity over a store, with FAISS (GPU when present), streamed in query blocks.

Similarities equal to 6 decimals are ties, ordered by row index.
Neighbours are stored for the largest K asked, so a K sweep slices instead of recomputing.
The point itself is excluded by row, not by assuming it comes back first (duplicates and ties exist);
within the returned candidates, ties are ordered by row index so results are deterministic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import outputs
from ..core.identity import comparable
from ..core.shards import open_h5
from ..core.store import Store, ids_sha256  # noqa: F401 (ids_sha256: named here too)
from ..errors import InputError, StoreError
from .search import (  # noqa: F401 (TIE_DECIMALS: named here too)
    TIE_DECIMALS,
    _bank_chunks,
    _order,
    build_index,
    knn_search,
    search_blocks,
    use_gpu,
)
from ..params import Index
from .vectors import Vectors, load_normalized

log = logging.getLogger(__name__)

@dataclass
class KnnResult:
    ids: np.ndarray  # store ids (n,)
    neighbors: np.ndarray  # (n, k) row indices into ids
    similarity: np.ndarray  # (n, k) cosine
    k: int
    index: str = "flat"
    meta: dict = field(default_factory=dict)
    # a search of one store's queries against another store (`knn --queries`): the bank's ids, which the
    # neighbours index; None for self-kNN (neighbours index `ids`)
    bank_ids: np.ndarray | None = None

    @property
    def targets(self) -> np.ndarray:
        """The ids the neighbour rows index: the bank's, or the points' own (not held for a sampled file, whose
        rows index the whole store it was drawn from: `n_targets`)."""
        return self.ids if self.bank_ids is None else self.bank_ids

    @property
    def sample(self) -> dict | None:
        """The draw of a sampled file (`knn --sample`): m, n, seed and the digests; None for an exhaustive one."""
        return self.meta.get("sample")

    @property
    def n_targets(self) -> int:
        return int(self.sample["n"]) if self.sample else len(self.targets)

    def content_sha256(self) -> str:
        """sha256 of what the file holds (ids, neighbours, similarities, k, index, meta): checked on load."""
        h = hashlib.sha256()
        for a in (np.ascontiguousarray(self.neighbors, dtype=np.int64), np.ascontiguousarray(self.similarity,
                                                                                               dtype=np.float32)):
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        h.update("\0".join(str(x) for x in self.ids).encode())
        if self.bank_ids is not None:
            h.update(b"\0bank\0" + "\0".join(str(x) for x in self.bank_ids).encode())
        h.update(json.dumps([int(self.k), str(self.index), self.stored_meta()], sort_keys=True).encode())
        return h.hexdigest()

    def stored_meta(self) -> dict:
        return {k: v for k, v in self.meta.items() if k != "seconds"}

    def save(self, path: str | Path) -> None:
        """Write an HDF5 neighbour file atomically; an existing file is replaced only if it is one of ours."""
        import h5py

        with outputs.writing(path, legacy=is_knn_file, what="neighbour file") as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("neighbors", data=self.neighbors)
            f.create_dataset("similarity", data=self.similarity)
            f.create_dataset("id", data=np.array(self.ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            if self.bank_ids is not None:
                f.create_dataset("bank_id", data=np.array(self.bank_ids, dtype=object),
                                 dtype=h5py.string_dtype("utf-8"))
            f.attrs["k"] = self.k
            f.attrs["index"] = self.index
            f.attrs["kind"] = "lookalike.knn"
            # timings are reported, not stored: the file is a function of its inputs (byte-identical re-runs)
            f.attrs["meta"] = json.dumps(self.stored_meta())
            f.attrs["content_sha256"] = self.content_sha256()


def is_knn_file(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("kind") == "lookalike.knn"
    except OSError:
        return False


def load_knn(path: str | Path) -> KnnResult:
    """A neighbour file, verified: its kind, its content checksum, the record of its draw, its shapes and rows.

    Args:
        path: a file `lookalike knn` (or `KnnResult.save`) wrote.

    Returns:
        The KnnResult it holds; InputError naming the file (and field) when it is not whole.
    """

    path = Path(path)
    if not path.exists():
        raise InputError("no such neighbour file", path=path)
    try:
        with open_h5(path, InputError, "neighbour file") as f:
            if f.attrs.get("kind") != "lookalike.knn":
                raise InputError("not a lookalike neighbour file (made by `lookalike knn`)", path=path)
            res = KnnResult(f["id"].asstr()[:], f["neighbors"][:], f["similarity"][:], int(f.attrs["k"]),
                            str(f.attrs["index"]), json.loads(f.attrs["meta"]),
                            f["bank_id"].asstr()[:] if "bank_id" in f else None)
            stored = f.attrs.get("content_sha256")
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"not a readable HDF5 file ({exc})", path=path) from exc
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise InputError(f"not a complete lookalike neighbour file ({exc}); re-run `lookalike knn`",
                         path=path) from exc
    if stored is None:
        log.warning("%s: made by an older lookalike (no content checksum); re-run `lookalike knn` to verify it", path)
    elif stored != res.content_sha256():
        raise InputError("its content does not match the checksum it was written with (changed after `lookalike "
                         "knn` wrote it); re-run `lookalike knn`", path=path)
    if res.sample is not None:
        bad = [f for f in SAMPLE_FIELDS if f not in res.sample]
        if bad or len(res.ids) != res.sample.get("m") or res.bank_ids is not None:
            raise InputError(f"a sampled neighbour file without a whole record of its draw ({bad or 'm'}); re-run "
                             "`lookalike knn --sample`", path=path, field="meta.sample")
    n, n_targets = len(res.ids), res.n_targets
    if res.neighbors.shape != (n, res.k) or res.similarity.shape != (n, res.k):
        raise InputError(f"holds {n} ids but neighbours of shape {res.neighbors.shape}; the file is damaged: re-run "
                         "`lookalike knn`", path=path)
    if res.neighbors.size and (res.neighbors.min() < 0 or res.neighbors.max() >= n_targets):
        n = n_targets
        bad = int(res.neighbors.min()) if res.neighbors.min() < 0 else int(res.neighbors.max())
        raise InputError(f"neighbour row {bad} is outside 0..{n - 1}; the file is damaged: re-run `lookalike knn`",
                         path=path, field="neighbors")
    return res


def duplicate_groups(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Rows of `x` that are exact copies of each other, as (first row of each group in ascending order, the group
    of every row, rows sorted by group then row, group offsets into them); None when every row is distinct."""
    if len(x) < 2:
        return None
    view = np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    _, first, group = np.unique(view, return_index=True, return_inverse=True)
    if len(first) == len(x):
        return None
    order_of_first = np.argsort(first, kind="stable")  # number groups by their first row
    rank = np.empty_like(order_of_first)
    rank[order_of_first] = np.arange(len(first))
    group = rank[group.ravel()]
    members = np.argsort(group, kind="stable")  # rows by group, ascending row within a group
    offsets = np.searchsorted(group[members], np.arange(len(first) + 1))
    return first[order_of_first], group, members, offsets


def knn_self_exact(x: np.ndarray, k: int, *, gpu: bool | None = None, block_rows: int = 8192,
                   bank_rows: int = 65536, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact self-kNN in the (-similarity to 6 decimals, row) order, at O(n·k) memory and time whatever the
    duplicates: exact copies are searched once (one query and one bank row per distinct vector), then each row's
    neighbours are drawn from its distinct neighbours' k+1 smallest rows. Without copies, `knn_self_streamed`."""
    groups = duplicate_groups(x)
    if groups is None:
        return knn_self_streamed(x, k, gpu=gpu, block_rows=block_rows, bank_rows=bank_rows, progress=progress)
    first, group, members, offsets = groups
    xu = x[first]
    n, m = len(x), min(k + 1, len(xu))
    # the k+1 nearest distinct vectors of every distinct vector, itself included (ties closed by first row)
    su, ru = (knn_self_streamed(xu, m, gpu=gpu, block_rows=block_rows, bank_rows=bank_rows, exclude_self=False,
                                progress=progress) if len(xu) > m else _all_pairs(xu))
    if progress is not None:  # the copies: searched with their first row
        progress(n - (len(xu) if len(xu) > m else 0))
    sizes = np.diff(offsets)
    take = np.minimum(sizes, k + 1)  # at most k from one group, plus the query itself
    sims = np.empty((n, k), dtype=np.float32)
    rows = np.empty((n, k), dtype=np.int64)
    for lo in range(0, len(xu), block_rows):
        hi = min(lo + block_rows, len(xu))
        cand_s, cand_r = _expand(su[lo:hi], ru[lo:hi], members, offsets, take, k + 1)
        # each distinct vector's candidates, ordered once; every copy of it then drops itself and keeps k
        order = np.lexsort((cand_r, -np.round(cand_s, TIE_DECIMALS)), axis=-1)
        cand_s, cand_r = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_r, order, 1)
        for g in range(lo, hi):
            for q in members[offsets[g]:offsets[g + 1]]:
                keep = cand_r[g - lo] != q
                r = cand_r[g - lo][keep][:k]
                if len(r) < k:
                    raise StoreError(f"query {int(q)}: fewer than k={k} neighbours")
                rows[q], sims[q] = r, cand_s[g - lo][keep][:k]
    return sims, rows


def _all_pairs(xu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct vector against all of them (when there are no more than k+1): ordered, itself included."""
    s = xu @ xu.T
    i = np.broadcast_to(np.arange(len(xu)), s.shape)
    return _order(s, np.ascontiguousarray(i), len(xu))


def _expand(su, ru, members, offsets, take, width):
    """Candidate (similarity, row) arrays: each distinct neighbour's `take` smallest rows, padded with -inf."""
    b, m = ru.shape
    cand_s = np.full((b, m * width), -np.inf, dtype=np.float32)
    cand_r = np.full((b, m * width), np.iinfo(np.int64).max, dtype=np.int64)
    for j in range(m):
        g = ru[:, j]
        for t in range(width):
            has = take[g] > t
            rows_t = np.where(has, members[np.minimum(offsets[g] + t, len(members) - 1)], np.iinfo(np.int64).max)
            cand_r[:, j * width + t] = rows_t
            cand_s[:, j * width + t] = np.where(has, su[:, j], -np.inf)
    return cand_s, cand_r


def knn_self_streamed(x: np.ndarray, k: int, *, gpu: bool | None = None, block_rows: int = 8192,
                      bank_rows: int = 65536, exclude_self: bool = True, progress=None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Exact (similarity, rows) of the k nearest other rows of every row of `x`, the bank streamed through a flat
    index `bank_rows` at a time (as faiss.contrib's knn_ground_truth): memory is `x` plus one bank block, not a
    second copy of `x` inside the index. Each block's exact top-k (ties at the k-th place closed) is merged with
    the running top-k by (-similarity to 6 decimals, row): the result is the one-index search's, tie for tie.
    exclude_self=False keeps each row among its own neighbours."""
    n = len(x)
    bank_rows = max(bank_rows, k + 1)
    starts = list(range(0, n, bank_rows))
    if len(starts) > 1 and n - starts[-1] < k + 1:  # a last block too small for k neighbours joins the one before
        starts.pop()
    ends = starts[1:] + [n]
    return search_blocks(((lo, x[lo:hi]) for lo, hi in zip(starts, ends)), x, k,
                         query_rows=np.arange(n) if exclude_self else None, gpu=gpu, block_rows=block_rows,
                         progress=progress)


# the exact search holds the store's vectors when they fit in this many bytes (exact copies then searched once,
# `knn_self_exact`); a larger store is searched a query block at a time against its shards on disk
IN_MEMORY_BYTES = int(float(os.environ.get("LOOKALIKE_KNN_MEMORY_MB", 4096)) * 2**20)
QUERY_ROWS = 65536


def knn_self_from_disk(v: Vectors, k: int, *, gpu: bool | None = None, block_rows: int = 8192,
                       bank_rows: int = 65536, query_rows: int | None = None, progress=None, ray: dict | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Exact self-kNN of every point with only a query block and a bank block in memory (plus the n×k result):
    each block of `query_rows` points is searched against the bank streamed from the store (`knn_of_rows`),
    so the rows are the in-memory search's, ties and copies included. Memory O(n·k + (query_rows + bank_rows)·d);
    time O(n²·d), the store read n / query_rows times."""
    n = len(v)
    query_rows = query_rows or QUERY_ROWS
    sims = np.empty((n, k), np.float32)
    rows = np.empty((n, k), np.int64)
    for lo in range(0, n, query_rows):
        hi = min(lo + query_rows, n)
        sims[lo:hi], rows[lo:hi] = knn_of_rows(v, np.arange(lo, hi), k, gpu=gpu, block_rows=block_rows,
                                               bank_rows=bank_rows, ray=ray)
        if progress is not None:
            progress(hi - lo)
    return sims, rows


def knn_self(store: Vectors | Store | np.ndarray, k: int = 10, *, index: Index = "flat", gpu: bool | None = None,
             block_rows: int = 8192, recall_sample: int = 1000, seed: int = 0, bank_rows: int = 65536,
             in_memory_bytes: int | None = None, progress=None, ray: dict | None = None, **index_kw) -> KnnResult:
    """The k nearest other points of every point of `store` by cosine similarity. The exact (flat) search holds
    the vectors when they fit in `in_memory_bytes` (LOOKALIKE_KNN_MEMORY_MB, 4 GiB) and streams the bank block by
    block (`knn_self_streamed`); a larger store is searched from disk (`knn_self_from_disk`), the same rows. ivf
    and hnsw build one index over all points.

    Args:
        store: a Store (`open_store`), Vectors, or an array of rows.
        k: neighbours per point (self excluded by row; ties at 6 decimals ordered by row).
        index: "flat" (exact), "ivf" or "hnsw" (approximate: recall@k measured on `recall_sample` points).
        gpu: FAISS on the GPU (None: when FAISS sees one). seed: the ivf training draw and the recall sample.
        block_rows, bank_rows: query and bank block sizes (memory, not results).
        in_memory_bytes: above this a flat search reads the store from disk (None: LOOKALIKE_KNN_MEMORY_MB).
        progress: called with the rows searched. ray: Ray options (`lookalike knn --backend ray`).
        **index_kw: the approximate index's settings (nlist, nprobe, hnsw_m, ef_search: `search.build_index`).

    Returns:
        A KnnResult: ids, neighbour rows and similarities (n × k), the index and what it recorded (meta).
    """
    v = Vectors.of(store)
    n = len(v)
    if k < 1:
        raise InputError(f"k must be at least 1 (got {k})")
    if k >= n:
        raise InputError(f"k={k} needs more than k points; the store has {n}", path=v.path)
    budget = IN_MEMORY_BYTES if in_memory_bytes is None else in_memory_bytes
    from_disk = index == "flat" and (n * v.vector_dim * 4 > budget or ray is not None)
    if ray is not None and index != "flat":
        raise InputError("kNN on Ray searches exactly (--index flat)", field="index")
    x = None if from_disk else v.normalized()
    ids = v.ids
    t0 = time.perf_counter()
    if from_disk:
        sims, rows = knn_self_from_disk(v, k, gpu=gpu, block_rows=block_rows, bank_rows=bank_rows,
                                        progress=progress, ray=ray)
    elif index == "flat":
        sims, rows = knn_self_exact(x, k, gpu=gpu, block_rows=block_rows, bank_rows=bank_rows, progress=progress)
    else:
        idx = build_index(x, index, gpu=gpu, seed=seed, **index_kw)
        sims, rows = knn_search(x, x, k, index=idx, block_rows=block_rows, exclude_rows=np.arange(n))
    meta = {"seconds": round(time.perf_counter() - t0, 3), "gpu": use_gpu(gpu) and index != "hnsw", "n": n,
            "dim": v.vector_dim, "metric": "cosine", "self_excluded_by": "row"}
    if v.store is not None:
        meta.update(_store_meta(v.store))
    if index != "flat":
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(recall_sample, n), replace=False))
        _, exact = knn_search(x, x[sample], k, gpu=gpu, exclude_rows=sample)
        hits = [len(set(a) & set(b)) for a, b in zip(rows[sample], exact)]
        meta["recall_at_k"] = float(np.mean(hits) / k)
        meta["recall_sample"] = len(sample)
        log.info("%s index recall@%d on %d sampled queries: %.4f", index, k, len(sample), meta["recall_at_k"])
    return KnnResult(np.asarray(ids), rows, sims, k, index, meta)


# --------------------------------------------------------------------------- sampled exact neighbours

SAMPLE_FIELDS = ("m", "n", "seed", "ids_sha256", "universe_sha256")


def sample_rows(n: int, m: int, seed: int) -> np.ndarray:
    """The rows of a uniform draw of `m` of `n` points without replacement, ascending: a pure function of
    (n, m, seed) (numpy's PCG64 generator), so any run, on any machine, draws the same points."""
    if not 1 <= m < n:
        raise InputError(f"--sample {m} must be at least 1 and below the {n} points of the store "
                         f"(all {n} points: leave --sample out for the exhaustive search)", field="sample")
    return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))


def knn_of_rows(v: Vectors, rows: np.ndarray, k: int, *, gpu: bool | None = None, block_rows: int = 8192,
                bank_rows: int = 65536, ray: dict | None = None, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact (similarity, row) of the k nearest other points of each of `rows` (sorted) among all the points of
    `v`, in the (-similarity to 6 decimals, row) order, self excluded by row: the rows an exhaustive search gives
    these points. The bank is streamed from the store one block at a time (as faiss.contrib's knn_ground_truth),
    each block searched exactly, ties at the k-th place closed, and merged into the running top-k.

    Memory: O(M·d + bank_rows·d + M·k) for M rows, whatever the store's size."""
    q = v.take(rows, bank_rows)
    if ray is not None:  # the same blocks, searched by Ray tasks (analysis.distributed), merged the same way
        from .distributed import ray_top_k

        if v.store is None:
            raise InputError("kNN on Ray reads the bank from a store's shards; give a store", field="backend")
        return ray_top_k(v.store, q, rows, k, bank_rows=bank_rows, progress=progress, **ray)
    return search_blocks(_bank_chunks(v.blocks(bank_rows), k + 1), q, k, query_rows=rows, gpu=gpu,
                         block_rows=block_rows, progress=progress)


def knn_sampled(store: Vectors | Store | np.ndarray, k: int = 10, m: int = 10000, *, seed: int = 0,
                gpu: bool | None = None, block_rows: int = 8192, bank_rows: int = 65536,
                ray: dict | None = None, progress=None) -> KnnResult:
    """The exact k nearest other points, among all n points, of `m` points drawn uniformly without replacement
    (seeded): the per-point Jaccards of two models' files made with the same draw estimate the all-points mean
    without bias. The draw is recorded (seed, m, n, a digest of the drawn ids and of every id in row order), and
    the neighbours are rows of the whole store. Time O(m·n·d); memory O(m·d + bank_rows·d + m·k), the ids read a
    shard at a time (never all held).

    Args:
        store: a Store, Vectors, or an array of rows. k: neighbours per drawn point.
        m: points drawn (1 <= m < n). seed: the draw's seed (numpy's PCG64; the same on any machine).
        gpu, block_rows, bank_rows, ray, progress: as `knn_self`'s.

    Returns:
        A KnnResult of the m drawn points (their ids, their neighbours as rows of the whole store), the draw
        recorded in meta["sample"].
    """
    v = Vectors.of(store)
    n = len(v)
    if k < 1:
        raise InputError(f"k must be at least 1 (got {k})", field="k")
    if k >= n:
        raise InputError(f"k={k} needs more than k points; the store has {n}", path=v.path, field="k")
    rows = sample_rows(n, m, seed)
    t0 = time.perf_counter()
    sims, nbrs = knn_of_rows(v, rows, k, gpu=gpu, block_rows=block_rows, bank_rows=bank_rows, ray=ray,
                             progress=progress)  # progress: bank rows searched
    ids = np.asarray(v.ids_at(rows))  # the drawn ids only: the universe's are digested shard by shard
    meta = {"seconds": round(time.perf_counter() - t0, 3), "gpu": use_gpu(gpu), "n": n, "dim": v.vector_dim,
            "metric": "cosine", "self_excluded_by": "row",
            "sample": {"m": int(m), "n": int(n), "seed": int(seed), "ids_sha256": ids_sha256(ids),
                       "universe_sha256": v.ids_sha256()}}
    if v.store is not None:
        meta.update(_store_meta(v.store))
    return KnnResult(ids, nbrs, sims, k, "flat", meta)


def _store_meta(store: Store) -> dict:
    """What a neighbour file records of the store its points come from: path, precision, features, selection, and
    the metric (exact Hamming on a binary store)."""
    meta = {"store": str(store.path), "precision": store.precision, **store.features(), **comparable(store.config)}
    if store.precision in ("binary", "ubinary"):
        meta["metric"] = "hamming (as the cosine of the ±1 vectors: 1 - 2h/d)"
    return meta


def write_faiss_index(store: Store, path: str | Path, block_rows: int = 65536) -> Path:
    """A FAISS index of the store (row i is the store's row i), written through the output ledger; returns the
    path. Float stores: an IndexFlatIP over the L2-normalised vectors (read with faiss.read_index). Binary stores:
    an IndexBinaryFlat over the packed bits, searched by Hamming distance (read with faiss.read_index_binary).
    Added a block at a time."""
    import faiss

    if store.precision in ("binary", "ubinary"):
        index = faiss.IndexBinaryFlat(store.vector_dim)
        for _, block in store.iter_blocks(block_rows, raw=True):
            bits = (block.astype(np.int16) + 128).astype(np.uint8) if store.precision == "binary" else block
            index.add(np.ascontiguousarray(bits, dtype=np.uint8))
        with outputs.writing(path, what="FAISS index") as tmp:
            faiss.write_index_binary(index, str(tmp))
        return Path(path)
    index = faiss.IndexFlatIP(store.vector_dim)
    for _, block in Vectors(store=store).blocks(block_rows):
        index.add(block)
    with outputs.writing(path, what="FAISS index") as tmp:
        faiss.write_index(index, str(tmp))
    return Path(path)


def knn_cross(queries: Store, bank: Store, k: int = 10, *, gpu: bool | None = None,
              block_rows: int = 8192) -> KnnResult:
    """The k nearest points of `bank` for every point of `queries` by cosine (exact, ties by bank row, as
    self-kNN): one model's query store searched against its corpus store. Both stores must hold the same model's
    features (model hash, pooling, normalisation, max length, precision kind); a point is not excluded, since the
    two stores hold different points."""
    from ..core.identity import selection
    from ..core.store import require_same_features

    require_same_features({"query": queries, "bank": bank}, "kNN of queries against a bank")
    q, x = load_normalized(queries), load_normalized(bank)
    if k > len(x):
        raise InputError(f"k={k} needs at least k bank points; the bank has {len(x)}", path=bank.path)
    t0 = time.perf_counter()
    sims, rows = knn_search(x, q, k, gpu=gpu, block_rows=block_rows)
    meta = {"seconds": round(time.perf_counter() - t0, 3), "gpu": use_gpu(gpu), "n": len(q), "n_bank": len(x),
            "dim": x.shape[1], "metric": "cosine", "self_excluded_by": "none (queries against a bank)",
            "bank": str(bank.path), "bank_selection": selection(bank.config), **_store_meta(queries)}
    return KnnResult(np.asarray(queries.ids), rows, sims, k, "flat", meta, np.asarray(bank.ids))
