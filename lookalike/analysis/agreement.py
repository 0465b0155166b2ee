"""Pairwise model agreement as Jaccard coefficients, computed from stored artifacts only.

- prediction errors: Jaccard of error sets, plus subset relations;
- data representation: per-point Jaccard of K-NN id sets, mean and variance over points;
- data distribution: Jaccard of deep-kNN OOD sets;
Points are aligned across models by id; different id sets are refused.
Jaccard of two empty sets is undefined and reported as NaN.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import InputError
from .knn import KnnResult
from .ood import OodResult


def jaccard(a: Iterable, b: Iterable) -> float:
    a, b = set(a), set(b)
    union = len(a | b)
    return len(a & b) / union if union else math.nan


def _same_ids(a: np.ndarray, b: np.ndarray, what: str) -> np.ndarray:
    """Row positions in b of a's ids; InputError if the id sets differ."""
    pos = {x: i for i, x in enumerate(b)}
    if len(a) != len(b) or any(x not in pos for x in a):
        only_a = [x for x in a if x not in pos][:3]
        raise InputError(f"{what}: the two models were run on different points ({len(a)} vs {len(b)} ids; "
                         f"e.g. only in the first: {only_a})")
    return np.fromiter((pos[x] for x in a), dtype=np.int64, count=len(a))


def knn_jaccards(a: KnnResult, b: KnnResult, k: int, block: int = 4096) -> np.ndarray:
    """Per-point Jaccard of the k-NN id sets of the same points under two models (a's point order)."""
    if k > a.k or k > b.k:
        raise InputError(f"k={k} is larger than the stored neighbours (k={a.k} and k={b.k}); re-run knn with --k {k}")
    b_rows = _same_ids(a.ids, b.ids, "representation agreement")
    # express b's neighbours in a's row numbering
    b_to_a = np.empty(len(b_rows), dtype=np.int64)
    b_to_a[b_rows] = np.arange(len(b_rows))
    na = a.neighbors[:, :k]
    nb = b_to_a[b.neighbors[b_rows, :k]]
    out = np.empty(len(na), dtype=np.float64)
    for lo in range(0, len(na), block):
        x, y = na[lo:lo + block], nb[lo:lo + block]
        inter = (x[:, :, None] == y[:, None, :]).any(2).sum(1)
        out[lo:lo + block] = inter / (2 * k - inter)
    return out


def representation_agreement(a: KnnResult, b: KnnResult, k: int = 10) -> dict:
    j = knn_jaccards(a, b, k)
    return {"mean": float(j.mean()), "variance": float(j.var()), "n": int(len(j)), "k": k}


def error_agreement(errors_a: set, errors_b: set) -> dict:
    """Jaccard of error sets and how much of each is contained in the other."""
    a, b = set(errors_a), set(errors_b)
    inter = len(a & b)
    return {"jaccard": jaccard(a, b), "n_a": len(a), "n_b": len(b), "intersection": inter,
            "a_subset_of_b": a <= b, "b_subset_of_a": b <= a,
            "frac_a_in_b": inter / len(a) if a else math.nan, "frac_b_in_a": inter / len(b) if b else math.nan}


def distribution_agreement(a: OodResult, b: OodResult, k: int = 10) -> dict:
    if k not in a.scores or k not in b.scores:
        raise InputError(f"k={k} was not scored in both OOD results (have {a.ks} and {b.ks})")
    _same_ids(a.test_ids, b.test_ids, "distribution agreement")
    oa, ob = a.ood_ids(k), b.ood_ids(k)
    return {"jaccard": jaccard(oa, ob), "n_ood_a": len(oa), "n_ood_b": len(ob), "k": k}


def pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """All unordered pairs in the given order (the first model first, as in the paper's Table 2)."""
    return list(itertools.combinations(names, 2))


def pairwise(names: Sequence[str], compare: Callable[[str, str], dict]) -> list[dict]:
    return [{"model_i": i, "model_j": j, **compare(i, j)} for i, j in pairs(names)]


def attack_row(summary: dict) -> dict:
    """The columns of the paper's Table 3 from an attack summary."""
    keys = ("original_accuracy", "accuracy_after_attack", "absolute_change", "percent_change",
            "attack_success_rate", "avg_perturbed_words_pct", "avg_queries")
    return {k: summary.get(k) for k in keys}
