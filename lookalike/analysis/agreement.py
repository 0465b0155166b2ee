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
from typing import Iterable, Sequence

import numpy as np

from ..core.identity import COMPARABLE, Identity
from ..core.store import id_positions
from ..errors import InputError
from ..files import first_difference
from .knn import SAMPLE_FIELDS, KnnResult, ids_sha256, sample_rows
from .ood import OodResult
from .scoring import ErrorSet


def jaccard(a: Iterable, b: Iterable) -> float:
    a, b = set(a), set(b)
    union = len(a | b)
    return len(a & b) / union if union else math.nan


def _same_ids(a: np.ndarray, b: np.ndarray, what: str) -> np.ndarray:
    """Row positions in b of a's ids; InputError if the id sets differ."""
    rows, why = id_positions(a, b)
    if rows is None:
        raise InputError(f"{what}: the two models were run on different points ({why})")
    return rows


def same_setup(meta_a: dict, meta_b: dict, what: str, keys: tuple[str, ...] = COMPARABLE) -> None:
    """InputError, naming the first differing field, unless two artifacts describe the same points with the same
    kind of features: corpus content, the whole record selection (text/pair/id fields, split, limit, every,
    offset), pooling, normalisation, max length. A field recorded by one artifact and not the other is refused
    too (an artifact made before lookalike recorded it: re-run the command that made it)."""
    d = Identity.of(meta_a, keys).difference(Identity.of(meta_b, keys))
    if d is not None:
        key, va, vb = d.field, d.first, d.second
        if d.absent:
            raise InputError(f"{what}: the {d.absent} artifact does not record its {key} (made by an older "
                             "lookalike?); re-run the command that made it so the two can be checked against each "
                             "other")
        if isinstance(va, dict) and isinstance(vb, dict):
            sub = first_difference(va, vb)
            if sub is not None:
                raise InputError(f"{what}: the two artifacts differ in {key}.{sub} ({va.get(sub)!r} vs "
                                 f"{vb.get(sub)!r}); compare models on the same records with the same embedding "
                                 "settings")
        elif va != vb:
            raise InputError(f"{what}: the two artifacts differ in {key} ({va!r} vs {vb!r}); compare models on "
                             "the same records with the same embedding settings")


def knn_jaccards(a: KnnResult, b: KnnResult, k: int, block: int = 4096) -> np.ndarray:
    """Per-point Jaccard of the k-NN id sets of the same points under two models (a's point order)."""
    na, nb, _, _ = aligned_neighbours(a, b, k)
    return _row_jaccards(na, nb, k, block)


def aligned_neighbours(a: KnnResult, b: KnnResult, k: int):
    """(a's first k neighbour rows, b's in a's numbering, a's similarities, b's) on the points both files cover,
    in a's point order: two files of the same points and setup (refused otherwise, naming the field)."""
    if k > a.k or k > b.k:
        raise InputError(f"k={k} is larger than the stored neighbours (k={a.k} and k={b.k}); re-run knn with --k {k}")
    if (a.bank_ids is None) != (b.bank_ids is None) and a.sample is None and b.sample is None:
        raise InputError("representation agreement: one neighbour file is a self-kNN and the other a search of "
                         "queries against a bank (knn --queries); compare files made the same way")
    same_setup(a.meta, b.meta, "representation agreement")
    if a.sample is not None or b.sample is not None:
        return _sampled_pair(a, b, k)
    if a.bank_ids is not None:
        same_setup(a.meta, b.meta, "representation agreement", keys=("bank_selection",))
    b_rows = _same_ids(a.ids, b.ids, "representation agreement")
    # express b's neighbours in a's row numbering (of the bank, for queries against a bank)
    b_targets = b_rows if a.bank_ids is None else _same_ids(a.bank_ids, b.bank_ids, "representation agreement")
    b_to_a = np.empty(len(b_targets), dtype=np.int64)
    b_to_a[b_targets] = np.arange(len(b_targets))
    return (a.neighbors[:, :k], b_to_a[b.neighbors[b_rows, :k]], a.similarity[:, :k],
            b.similarity[b_rows, :k])


def _row_jaccards(na: np.ndarray, nb: np.ndarray, k: int, block: int = 4096) -> np.ndarray:
    """Per-row |A∩B| / |A∪B| of two (points × k) arrays of neighbour rows in one numbering."""
    out = np.empty(len(na), dtype=np.float64)
    for lo in range(0, len(na), block):
        x, y = na[lo:lo + block], nb[lo:lo + block]
        inter = (x[:, :, None] == y[:, None, :]).any(2).sum(1)
        out[lo:lo + block] = inter / (2 * k - inter)
    return out


def _sampled_pair(a: KnnResult, b: KnnResult, k: int):
    """The two files' neighbour rows (and similarities) on the points of one draw, in one numbering (the
    universe's rows). Two
    sampled files must record the same draw of the same universe; a sampled file beside an exhaustive self-kNN
    of the same universe is compared on the drawn points. Anything else is refused, naming the field."""
    what = "representation agreement"
    if a.bank_ids is not None or b.bank_ids is not None:
        raise InputError(f"{what}: a sampled neighbour file is compared with a sampled or an exhaustive self-kNN, "
                         "not with a search of queries against a bank (knn --queries)", field="sample")
    if a.sample is not None and b.sample is not None:
        for f in SAMPLE_FIELDS:
            if a.sample.get(f) != b.sample.get(f):
                raise InputError(f"{what}: the two sampled files differ in sample.{f} ({a.sample.get(f)!r} vs "
                                 f"{b.sample.get(f)!r}); per-point Jaccards are comparable only on the same draw "
                                 "of the same points: run both with the same --sample and --sample-seed",
                                 field=f"sample.{f}")
        return a.neighbors[:, :k], b.neighbors[:, :k], a.similarity[:, :k], b.similarity[:, :k]
    sampled, full = (a, b) if a.sample is not None else (b, a)
    d = sampled.sample
    if len(full.ids) != d["n"] or ids_sha256(full.ids) != d["universe_sha256"]:
        raise InputError(f"{what}: the sampled file was drawn from {d['n']} points and the exhaustive one holds "
                         f"{len(full.ids)} other points or another order (sample.universe_sha256 differs)",
                         field="sample.universe_sha256")
    rows = sample_rows(d["n"], d["m"], d["seed"])
    if ids_sha256(full.ids[rows]) != d["ids_sha256"]:
        raise InputError(f"{what}: the sampled file's drawn ids are not the exhaustive file's rows of that draw "
                         "(sample.ids_sha256 differs)", field="sample.ids_sha256")
    mine = (sampled.neighbors[:, :k], sampled.similarity[:, :k])
    theirs = (full.neighbors[rows, :k], full.similarity[rows, :k])
    (na, sa), (nb, sb) = (mine, theirs) if sampled is a else (theirs, mine)
    return na, nb, sa, sb


def knn_basis(a: KnnResult, b: KnnResult) -> str:
    """What a representation agreement of these two files is computed over: every point, or a draw of them."""
    d = a.sample or b.sample
    if d is None:
        return f"exhaustive: all {len(a.ids)} points"
    both = "" if a.sample is not None and b.sample is not None else " (an exhaustive file compared on the draw)"
    return f"estimated from {d['m']} of {d['n']} points (seed {d['seed']}){both}"


def representation_agreement(a: KnnResult, b: KnnResult, k: int = 10) -> dict:
    j = knn_jaccards(a, b, k)
    return {"mean": float(j.mean()), "variance": float(j.var()), "n": int(len(j)), "k": k, "basis": knn_basis(a, b)}


def same_universe(a: ErrorSet, b: ErrorSet) -> str:
    """How far the two error sets' question sets are known to match; InputError when they differ."""
    if a.universe is not None and b.universe is not None:
        if a.universe != b.universe:
            only_a = sorted(a.universe - b.universe)[:3]
            raise InputError(f"prediction errors: {a.source} was scored on {len(a.universe)} questions and "
                             f"{b.source} on {len(b.universe)} (e.g. only in the first: {only_a}); error sets over "
                             "different questions cannot be compared")
        return f"checked ({len(a.universe)} records)"
    known = a.universe if a.universe is not None else b.universe
    if known is not None:
        other = b if a.universe is not None else a
        outside = sorted(other.ids - known)
        if outside:
            raise InputError(f"prediction errors: {other.source} names {len(outside)} ids outside the "
                             f"{len(known)} questions {(a if other is b else b).source} was scored on "
                             f"(e.g. {outside[:3]})")
        return f"unchecked for {other.source} (an id list without --dataset; its ids lie within the other's)"
    return "unchecked (id lists without --dataset)"


def error_agreement(errors_a: set | ErrorSet, errors_b: set | ErrorSet) -> dict:
    """Jaccard of error sets and how much of each is contained in the other (ErrorSets: over the same questions)."""
    universe = None
    if isinstance(errors_a, ErrorSet) and isinstance(errors_b, ErrorSet):
        universe = same_universe(errors_a, errors_b)
    a = set(errors_a.ids if isinstance(errors_a, ErrorSet) else errors_a)
    b = set(errors_b.ids if isinstance(errors_b, ErrorSet) else errors_b)
    inter = len(a & b)
    return {"jaccard": jaccard(a, b), "n_a": len(a), "n_b": len(b), "intersection": inter,
            "a_subset_of_b": a <= b, "b_subset_of_a": b <= a,
            "frac_a_in_b": inter / len(a) if a else math.nan, "frac_b_in_a": inter / len(b) if b else math.nan,
            **({"universe": universe} if universe else {})}


# deep-kNN OOD sets of two models: the same bank, validation and challenge records, features of one kind, one TPR
OOD_COMPARABLE = ("pooling", "max_length", "normalize", "tpr", "train_fingerprint", "test_fingerprint",
                  "train_selection", "test_selection", "val_selection")


def distribution_agreement(a: OodResult, b: OodResult, k: int = 10) -> dict:
    if k not in a.scores or k not in b.scores:
        raise InputError(f"k={k} was not scored in both OOD results (have {a.ks} and {b.ks})")
    _same_ids(a.test_ids, b.test_ids, "distribution agreement")
    same_setup(a.meta, b.meta, "distribution agreement", OOD_COMPARABLE)
    oa, ob = a.ood_ids(k), b.ood_ids(k)
    return {"jaccard": jaccard(oa, ob), "n_ood_a": len(oa), "n_ood_b": len(ob), "k": k}


def pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """All unordered pairs in the given order (the first model first, as in the paper's Table 2)."""
    return list(itertools.combinations(names, 2))
