"""Deep Nearest Neighbors OOD detection (Sun, Ming, Zhu & Li, ICML 2022) over stores.

Features are L2-normalised; a test point's score is the negative Euclidean distance to its k-th nearest
neighbour in the normalised training bank; a point is in-distribution when score >= lambda, with lambda
chosen on in-distribution validation points so that a fraction `tpr` of them is kept (TPR 95%):
lambda is the largest value with  #{val score >= lambda} >= ceil(tpr * n_val).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import outputs
from ..core.identity import selection
from ..core.store import Store, require_same_features
from ..errors import InputError
from ..files import load_json
from .search import build_index, knn_search
from .vectors import Vectors

log = logging.getLogger(__name__)


def kth_distance_scores(bank: np.ndarray, queries: np.ndarray, ks: Sequence[int], *, gpu: bool | None = None,
                        index=None) -> dict[int, np.ndarray]:
    """{k: -||z - z_(k)||} for normalised bank and queries, from one search with the largest k."""
    kmax = max(ks)
    index = index if index is not None else build_index(bank, "flat", gpu=gpu)
    sims, _ = knn_search(bank, queries, kmax, index=index, exact_rows=False)  # scores: the k-th similarity only
    # for unit vectors ||a-b||^2 = 2 - 2 a.b ; clip the rounding below zero
    dist = np.sqrt(np.clip(2.0 - 2.0 * sims.astype(np.float64), 0.0, None))
    return {k: -dist[:, k - 1] for k in ks}


def kth_distance_scores_streamed(blocks, queries: np.ndarray, ks: Sequence[int], *, gpu: bool | None = None,
                                 ray_search=None, progress=None) -> dict[int, np.ndarray]:
    """`kth_distance_scores` against a bank given as (first row, normalised block) blocks, never whole in memory:
    each block's exact top-k similarities are merged into the running top-k by (-similarity to 6 decimals,
    row), the order one index over the whole bank gives, so the scores are the same. Memory O(Q·d + block·d)."""
    from .search import _bank_chunks, search_blocks

    kmax = max(ks)
    if ray_search is not None:  # the same blocks, searched by Ray tasks and merged the same way
        sims, _ = ray_search(queries, kmax)
    else:
        sims, _ = search_blocks(_bank_chunks(blocks, kmax), queries, kmax, gpu=gpu, exact_rows=False,
                                progress=progress)
    dist = np.sqrt(np.clip(2.0 - 2.0 * sims.astype(np.float64), 0.0, None))
    return {k: -dist[:, k - 1] for k in ks}


def _bank_blocks(train: Vectors, drop: np.ndarray | None, rows: int):
    """The training bank's normalised blocks, without the rows in `drop` (sorted; the held-out validation
    split), each block's first row in the bank's own numbering."""
    kept = 0
    for start, block in train.blocks(rows):
        if drop is not None:
            lo, hi = np.searchsorted(drop, [start, start + len(block)])
            if hi > lo:
                keep = np.ones(len(block), bool)
                keep[drop[lo:hi] - start] = False
                block = block[keep]
        if len(block):
            yield kept, block
        kept += len(block)


def threshold_at_tpr(val_scores: np.ndarray, tpr: float) -> float:
    """Largest lambda such that at least ceil(tpr * n) validation scores are >= lambda."""
    if not 0 < tpr <= 1:
        raise InputError(f"tpr must be in (0, 1] (got {tpr})")
    s = np.sort(np.asarray(val_scores, dtype=np.float64))[::-1]
    need = max(1, math.ceil(tpr * len(s) - 1e-9))
    return float(s[need - 1])


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Probability that an in-distribution point scores higher than an OOD point (ties count half)."""
    scores = np.concatenate([id_scores, ood_scores])
    ranks = _rankdata(scores)
    n1, n0 = len(id_scores), len(ood_scores)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _rankdata(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=np.float64)
    sorted_a = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


@dataclass
class OodResult:
    test_ids: np.ndarray
    ks: list[int]
    tpr: float
    scores: dict[int, np.ndarray]
    thresholds: dict[int, float]
    metrics: dict[int, dict] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def ood_mask(self, k: int) -> np.ndarray:
        return self.scores[k] < self.thresholds[k]

    def ood_ids(self, k: int) -> set[str]:
        return set(self.test_ids[self.ood_mask(k)])

    def save(self, path: str | Path) -> None:
        out = {"kind": "lookalike.ood", "method": "deep-knn (Sun et al. 2022)", "tpr": self.tpr, "k": self.ks,
               "meta": self.meta, "test_ids": [str(x) for x in self.test_ids],
               "results": {str(k): {"threshold": self.thresholds[k],
                                    "n_ood": int(self.ood_mask(k).sum()),
                                    "metrics": self.metrics.get(k, {}),
                                    "score": [round(float(x), 7) for x in self.scores[k]],
                                    "ood": [bool(x) for x in self.ood_mask(k)]} for k in self.ks}}
        out["content_sha256"] = _content_sha256(out)
        outputs.write_json(path, out, legacy=is_ood_file, what="OOD file")


def _content_sha256(obj: dict) -> str:
    """sha256 of an OOD file's content (everything but this checksum), in canonical JSON."""
    import hashlib

    body = {k: v for k, v in obj.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def is_ood_file(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("kind") == "lookalike.ood"
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def load_ood(path: str | Path) -> OodResult:
    """An OOD file, verified (kind, content checksum, one score per test id for every k).

    Args:
        path: a file `lookalike ood` (or `OodResult.save`) wrote.

    Returns:
        The OodResult it holds; InputError naming the file when it is not whole.
    """
    path = Path(path)
    obj = load_json(path, "OOD file")
    if not isinstance(obj, dict) or obj.get("kind") != "lookalike.ood":
        raise InputError("not a lookalike OOD file (made by `lookalike ood`)", path=path)
    if "content_sha256" not in obj:
        log.warning("%s: made by an older lookalike (no content checksum); re-run `lookalike ood` to verify it", path)
    elif obj["content_sha256"] != _content_sha256(obj):
        raise InputError("its content does not match the checksum it was written with (changed after `lookalike "
                         "ood` wrote it); re-run `lookalike ood`", path=path)
    try:
        ks = [int(k) for k in obj["k"]]
        res = obj["results"]
        n = len(obj["test_ids"])
        for k in ks:
            if len(res[str(k)]["score"]) != n:
                raise ValueError(f"k={k} has {len(res[str(k)]['score'])} scores for {n} test ids")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"not a complete lookalike OOD file ({exc}); re-run `lookalike ood`", path=path) from exc
    return OodResult(np.array(obj["test_ids"], dtype=object), ks, obj["tpr"],
                     {k: np.array(res[str(k)]["score"]) for k in ks},
                     {k: float(res[str(k)]["threshold"]) for k in ks},
                     {k: res[str(k)].get("metrics", {}) for k in ks}, obj.get("meta", {}))


def deep_knn_ood(train, test, ks: int | Sequence[int] = 10, *, tpr: float = 0.95, val=None, in_test=None,
                 val_fraction: float = 0.1, seed: int = 0, gpu: bool | None = None,
                 allow_overlap: bool = False, bank_rows: int = 65536, ray: dict | None = None,
                 progress=None) -> OodResult:
    """Score `test` against the `train` bank; threshold from `val` (or a held-out split of train).

    The bank is streamed from its store `bank_rows` at a time: memory O((val + test + in-test)·d + bank_rows·d).

    Args:
        train, test, val, in_test: stores or arrays of rows (analysis.vectors.Vectors).
        ks: the neighbour rank(s) scored (one search with the largest).
        tpr: the fraction of validation points kept in-distribution by each threshold (0.95, the paper's).
        val: threshold calibration points (None: `val_fraction` of train held out, drawn with `seed`).
        in_test: held-out in-distribution test points; with them AUROC and FPR@tpr are reported
            (in-distribution positive, `test` as OOD), as in the original paper.
        allow_overlap: accept val/in-test/test stores that hold points of the bank (refused by default: a bank
            point is its own nearest neighbour, so thresholds and AUROC computed on it are not held-out numbers).
        gpu, bank_rows, ray, progress: as `knn_self`'s.

    Returns:
        An OodResult: per k, the test points' scores, the threshold and the metrics; what was compared (meta).
    """
    ks = [ks] if isinstance(ks, int) else sorted(set(int(k) for k in ks))
    if not ks or min(ks) < 1:
        raise InputError("k must be at least 1")
    train, test = Vectors.of(train), Vectors.of(test)
    val = Vectors.of(val) if val is not None else None
    in_test = Vectors.of(in_test) if in_test is not None else None
    given = {role: v for role, v in (("train", train), ("test", test), ("val", val), ("in-test", in_test))
             if v is not None}
    stores = {role: v.store for role, v in given.items() if v.store is not None}
    if len(stores) > 1:
        require_same_features(stores, "deep-kNN OOD")
    dims = {v.dim for v in given.values()}
    if len(dims) > 1:
        raise InputError(f"stores of different dimensions {sorted(dims)}: train, test and val must come from "
                         "the same model")
    overlap = _bank_overlap(stores)
    if overlap and not allow_overlap:
        role, n, example = overlap[0]
        raise InputError(f"the {role} store holds {n} of the bank's points (e.g. id {example!r}); deep-kNN needs "
                         "held-out points (a bank point is its own nearest neighbour). Use a held-out store, or "
                         "pass --allow-overlap to accept it (recorded)", path=stores[role].path)
    queries = test.normalized()
    test_ids = test.ids
    meta = {"train": train.label, "test": test.label,
            "distance": "euclidean on L2-normalised features", "score": "-distance to the k-th neighbour",
            "threshold_rule": "largest lambda with #{val >= lambda} >= ceil(tpr * n_val)", "tpr": tpr}
    if train.store is not None:
        bank_store = train.store
        meta["precision"] = bank_store.precision
        if bank_store.precision in ("binary", "ubinary"):
            meta["distance"] = "euclidean on the L2-normalised ±1 vectors of the bits: 2*sqrt(hamming/d)"
        meta.update(bank_store.features(), train_fingerprint=bank_store.config.get("corpus_fingerprint"),
                    train_selection=selection(bank_store.config))
    if test.store is not None:
        meta.update(test_fingerprint=test.store.config.get("corpus_fingerprint"),
                    test_selection=selection(test.store.config))
    if val is not None and val.store is not None:
        meta["val_selection"] = selection(val.store.config)
    drop = None  # the bank is streamed from the store a block at a time: never whole in memory
    if val is not None:
        val_x = val.normalized()
        meta["val"] = val.label
        n_bank = len(train)
    else:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(train))
        n_val = max(1, int(round(val_fraction * len(train))))
        drop = np.sort(perm[:n_val])
        val_x = train.take(drop, bank_rows)  # order does not matter: a threshold is a quantile of the scores
        n_bank = len(train) - n_val
        meta["val"] = (f"held-out {n_val} of {len(perm)} train points (fraction {val_fraction}, seed {seed}); "
                       f"bank is the other {n_bank}")
    if n_bank < max(ks):
        raise InputError(f"the training bank has {n_bank} points, fewer than k={max(ks)}")
    # every scored point in one pass over the bank: validation, challenge and held-out in-distribution points
    parts = [val_x, queries] + ([in_test.normalized()] if in_test is not None else [])
    bounds = np.cumsum([0] + [len(x) for x in parts])
    ray_search = None
    if ray is not None:
        from .distributed import ray_top_k

        if train.store is None:
            raise InputError("OOD on Ray reads the bank from a store's shards; give a store", field="backend")
        ray_search = lambda q, k: ray_top_k(train.store, q, None, k, bank_rows=bank_rows, exact_rows=False,  # noqa: E731
                                            drop=drop, progress=progress, **ray)
    scores = kth_distance_scores_streamed(_bank_blocks(train, drop, bank_rows), np.concatenate(parts), ks, gpu=gpu,
                                          ray_search=ray_search, progress=progress)  # progress: bank rows
    val_scores, test_scores = ({k: v[bounds[i]:bounds[i + 1]] for k, v in scores.items()} for i in (0, 1))
    thresholds = {k: threshold_at_tpr(val_scores[k], tpr) for k in ks}
    metrics: dict[int, dict] = {k: {"val_tpr": float((val_scores[k] >= thresholds[k]).mean())} for k in ks}
    if in_test is not None:
        id_scores = {k: v[bounds[2]:bounds[3]] for k, v in scores.items()}
        for k in ks:
            lam_test = threshold_at_tpr(id_scores[k], tpr)
            metrics[k].update(auroc=auroc(id_scores[k], test_scores[k]),
                              fpr_at_tpr=float((test_scores[k] >= lam_test).mean()),
                              in_test_tpr_at_val_threshold=float((id_scores[k] >= thresholds[k]).mean()))
    meta.update(n_bank=n_bank, n_val=len(val_x), n_test=len(queries))
    if overlap:
        meta["bank_overlap"] = {role: n for role, n, _ in overlap}
    return OodResult(np.asarray(test_ids), ks, tpr, test_scores, thresholds, metrics, meta)


def _bank_overlap(stores: dict[str, Store]) -> list[tuple[str, int, str]]:
    """(role, shared points, an example id) for every store that is the bank or shares records with it: the same
    content, or the same corpus (fingerprint) with ids in common."""
    bank = stores.get("train")
    if bank is None:
        return []
    out = []
    for role, s in stores.items():
        if role == "train":
            continue
        if s.key() == bank.key() or Path(s.path).resolve() == Path(bank.path).resolve():
            out.append((role, len(s), str(s.ids[0]) if len(s) else ""))
        elif s.config.get("corpus_fingerprint") == bank.config.get("corpus_fingerprint"):
            shared = _shared_ids(s, bank)
            if shared:
                out.append((role, len(shared), str(min(shared))))
    return out


def _shared_ids(a: Store, b: Store) -> list[str]:
    """The ids two stores have in common, found by their 64-bit digests (no set of every id), confirmed on the
    ids themselves."""
    da, db = a.id_digests(), b.id_digests()
    rows_a = np.flatnonzero(np.isin(da, db))
    if len(rows_a) == 0:
        return []
    ids_a = a.ids_at(rows_a)
    rows_b = np.flatnonzero(np.isin(db, da[rows_a]))
    return sorted(set(ids_a) & set(b.ids_at(rows_b)))


# a comparison of OOD sets says something only when the sets are large enough to differ and the detector works
OOD_MIN_FRACTION = 0.05
OOD_MIN_AUROC = 0.9


def meaningful(res: OodResult, k: int, min_fraction: float = OOD_MIN_FRACTION,
               min_auroc: float = OOD_MIN_AUROC) -> dict:
    """Is this model's OOD set informative? It must flag >= `min_fraction` of the challenge set at its TPR
    threshold and separate the challenge set from held-out in-distribution points with AUROC >= `min_auroc`
    (AUROC needs `in_test`; without it the rule cannot pass)."""
    n_ood, n_test = int(res.ood_mask(k).sum()), len(res.test_ids)
    frac = n_ood / n_test if n_test else 0.0
    auroc = res.metrics.get(k, {}).get("auroc")
    problems = []
    if frac < min_fraction:
        problems.append(f"flags {frac:.1%} of the challenge set (< {min_fraction:.0%})")
    if auroc is None:
        problems.append("no AUROC (give held-out in-distribution points)")
    elif auroc < min_auroc:
        problems.append(f"AUROC {auroc:.3f} < {min_auroc}")
    return {"n_ood": n_ood, "n_test": n_test, "fraction": frac, "auroc": auroc, "ok": not problems,
            "reason": "; ".join(problems) or "ok"}


def summary_by_k(res: OodResult) -> tuple[dict, list[tuple[int, str]]]:
    """({k: threshold, counts, metrics and the meaningfulness verdict}, [(k, why) for each k that fails the rule])."""
    summary, failing = {}, []
    for k in res.ks:
        verdict = meaningful(res, k)
        summary[str(k)] = {"threshold": res.thresholds[k], "n_ood": int(res.ood_mask(k).sum()),
                           "n_test": len(res.test_ids), **res.metrics[k], "meaningful": verdict["ok"],
                           "verdict": verdict["reason"]}
        if not verdict["ok"]:
            failing.append((k, verdict["reason"]))
    return summary, failing
