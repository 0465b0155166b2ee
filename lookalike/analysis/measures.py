"""The field's other representation measures beside the paper's kNN Jaccard, each streamed at any n:

- linear CKA (Kornblith et al., ICML 2019), biased and debiased (Song et al.'s unbiased HSIC, JMLR 2012), from
  two stores of the same points in one pass: feature-space sufficient statistics accumulated in float64, block
  by block; no n×n matrix is ever formed. Time O(n·d_a·d_b), memory O(G·(d_a² + d_b² + d_a·d_b) + block).
- mutual-kNN (Huh et al., ICML 2024): mean over points of |A∩B| / k, from two neighbour files.
- CKNNA (same paper; platonic-rep's `cknna`, unbiased, topk = k): CKA on kernels masked to mutual-neighbour
  pairs, from two neighbour files alone: the masked kernel entries are the cosines the files store, so it costs
  O(n·k) memory.

Features are L2-normalised first (as kNN and platonic-rep normalise). Intervals: CKA and CKNNA by a delete-a-group
jackknife over G contiguous groups of points (G = 20; t quantile with G − 1 degrees of freedom), mutual-kNN by
the bootstrap over points its Jaccard sibling uses. Chance levels: the measure against a row-permuted partner
(seeded), on a draw of at most CHANCE_ROWS points for the stream-free measures' cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InputError
from .knn import KnnResult

GROUPS = 20
CHANCE_ROWS = 20000


# --------------------------------------------------------------------------- HSIC from sufficient statistics

@dataclass
class _Stats:
    """Sums over points i of a pair of features (x_i, y_i): everything the biased and the unbiased HSIC of
    K = XXᵀ, L = YYᵀ (and of K with itself, L with itself) need, in float64."""

    p: int
    q: int
    n: int = 0
    sx: np.ndarray = None
    sy: np.ndarray = None
    xy: np.ndarray = None  # Σ x yᵀ (p × q)
    xx: np.ndarray = None  # Σ x xᵀ
    yy: np.ndarray = None
    d: float = 0.0  # Σ ‖x‖²
    e: float = 0.0  # Σ ‖y‖²
    de: float = 0.0  # Σ ‖x‖²‖y‖²
    dd: float = 0.0
    ee: float = 0.0
    ex: np.ndarray = None  # Σ ‖y‖² x
    dy: np.ndarray = None  # Σ ‖x‖² y
    dx: np.ndarray = None  # Σ ‖x‖² x
    ey: np.ndarray = None  # Σ ‖y‖² y

    def __post_init__(self):
        p, q = self.p, self.q
        for name, shape in (("sx", p), ("sy", q), ("xy", (p, q)), ("xx", (p, p)), ("yy", (q, q)), ("ex", p),
                            ("dy", q), ("dx", p), ("ey", q)):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(shape))

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        d, e = (x * x).sum(1), (y * y).sum(1)
        self.n += len(x)
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xy += x.T @ y
        self.xx += x.T @ x
        self.yy += y.T @ y
        self.d += d.sum()
        self.e += e.sum()
        self.de += (d * e).sum()
        self.dd += (d * d).sum()
        self.ee += (e * e).sum()
        self.ex += e @ x
        self.dy += d @ y
        self.dx += d @ x
        self.ey += e @ y

    def __sub__(self, other: "_Stats") -> "_Stats":
        out = _Stats(self.p, self.q)
        for name in ("n", "sx", "sy", "xy", "xx", "yy", "d", "e", "de", "dd", "ee", "ex", "dy", "dx", "ey"):
            setattr(out, name, getattr(self, name) - getattr(other, name))
        return out

    def __add__(self, other: "_Stats") -> "_Stats":
        out = _Stats(self.p, self.q)
        for name in ("n", "sx", "sy", "xy", "xx", "yy", "d", "e", "de", "dd", "ee", "ex", "dy", "dx", "ey"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out

    # ---- the two HSICs, each for (K, L), (K, K), (L, L)
    def _biased(self, c: np.ndarray, sa: np.ndarray, sb: np.ndarray) -> float:
        """‖Xcᵀ Yc‖²_F = tr(KHLH) (up to the (n−1)² both sides of the ratio share)."""
        centred = c - np.outer(sa, sb) / self.n
        return float((centred * centred).sum())

    def _unbiased(self, c, sa, sb, ab, a, b, va, vb) -> float:
        """Song et al.'s HSIC_u from feature-space terms: c = Σ x yᵀ, sa/sb the sums, ab = Σ d_i e_i,
        a = Σ d_i, b = Σ e_i, va = Σ e_i x_i, vb = Σ d_i y_i (d, e the squared norms: the Gram diagonals)."""
        n = self.n
        tr = float((c * c).sum()) - ab  # tr(K̃L̃) = ‖XᵀY‖² − Σ d e
        one_k, one_l = float(sa @ sa) - a, float(sb @ sb) - b  # 1ᵀK̃1, 1ᵀL̃1
        one_kl = float(sa @ c @ sb) - float(vb @ sb) - float(va @ sa) + ab  # 1ᵀK̃L̃1
        return (tr + one_k * one_l / ((n - 1) * (n - 2)) - 2 / (n - 2) * one_kl) / (n * (n - 3))

    def cka(self) -> float:
        kl = self._biased(self.xy, self.sx, self.sy)
        kk, ll = self._biased(self.xx, self.sx, self.sx), self._biased(self.yy, self.sy, self.sy)
        return kl / math.sqrt(kk * ll) if kk > 0 and ll > 0 else math.nan

    def cka_debiased(self) -> float:
        if self.n < 4:
            return math.nan
        kl = self._unbiased(self.xy, self.sx, self.sy, self.de, self.d, self.e, self.ex, self.dy)
        kk = self._unbiased(self.xx, self.sx, self.sx, self.dd, self.d, self.d, self.dx, self.dx)
        ll = self._unbiased(self.yy, self.sy, self.sy, self.ee, self.e, self.e, self.ey, self.ey)
        return kl / math.sqrt(kk * ll) if kk > 0 and ll > 0 else math.nan


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def jackknife(full: float, leave_out: list[float], level: float = 0.95) -> tuple[float, float]:
    """Delete-a-group jackknife interval: θ ± t(G−1) · se, se² = (G−1)/G · Σ (θ_(g) − mean θ_(g))²."""
    from scipy import stats

    vals = np.array([v for v in leave_out if np.isfinite(v)])
    g = len(vals)
    if g < 2 or not math.isfinite(full):
        return math.nan, math.nan
    se = math.sqrt((g - 1) / g * float(((vals - vals.mean()) ** 2).sum()))
    t = float(stats.t.ppf(0.5 + level / 2, g - 1))
    return full - t * se, full + t * se


def cka_from_blocks(pairs, groups: int = GROUPS, n: int | None = None) -> dict:
    """Linear CKA, biased and debiased, with jackknife intervals, from an iterator of (x block, y block) of the
    same points in the same order (raw features: normalised here). `n` (the number of points, when known) makes
    the groups contiguous ranges of about n / groups points; else each block is a group of its own (merged
    round-robin into `groups`)."""
    parts = _cka_parts(pairs, groups, n)
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    out = {"n": total.n, "groups": sum(p.n > 0 for p in parts)}
    filled = [p for p in parts if p.n > 0]
    for name, f in (("cka", _Stats.cka), ("cka_debiased", _Stats.cka_debiased)):
        value = f(total)
        out[name] = value
        out[f"{name}_lo"], out[f"{name}_hi"] = (jackknife(value, [f(total - p) for p in filled]) if len(filled) > 1
                                                else (math.nan, math.nan))
    return out


def _cka_parts(pairs, groups: int, n: int | None) -> list["_Stats"]:
    """Each jackknife group's sufficient statistics (see `cka_from_blocks`)."""
    parts: list[_Stats] = []
    row = block = 0
    for x, y in pairs:
        x, y = _normalise(x), _normalise(y)
        if not parts:
            parts = [_Stats(x.shape[1], y.shape[1]) for _ in range(groups)]
        if n:  # contiguous groups of about n / groups points: each group's slice of this block
            edges = [g * n // groups for g in range(groups + 1)]
            for g in range(groups):
                lo, hi = max(edges[g], row) - row, min(edges[g + 1], row + len(x)) - row
                if lo < hi:
                    parts[g].add(x[lo:hi], y[lo:hi])
        else:  # unknown n: whole blocks, round-robin
            parts[block % groups].add(x, y)
        row += len(x)
        block += 1
    if not parts:
        raise InputError("no points to compare")
    return parts


def cka_difference(ref, x, y, name: str = "cka", *, block_rows: int = 65536,
                   groups: int = GROUPS) -> tuple[float, float, float]:
    """(CKA(ref, x) − CKA(ref, y), its 95% interval): both pairs' statistics gathered over the same contiguous
    groups of points, and the jackknife taken on the difference, group by group (paired, as the paper's Table 2
    cells are). name: "cka" or "cka_debiased"."""
    from .vectors import Vectors

    vr, vx, vy = Vectors.of(ref), Vectors.of(x), Vectors.of(y)
    for other in (vx, vy):
        if len(other) != len(vr) or other.ids_sha256() != vr.ids_sha256():
            raise InputError("CKA: the stores hold different points, or the same points in another order",
                             path=other.path, field="id")
    f = _Stats.cka if name == "cka" else _Stats.cka_debiased
    sides = []
    for v in (vx, vy):
        pairs = ((a, b) for (_, a), (_, b) in zip(vr.blocks(block_rows), v.blocks(block_rows)))
        parts = _cka_parts(pairs, groups, len(vr))
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        sides.append((total, parts))
    (tx, px), (ty, py) = sides
    diff = f(tx) - f(ty)
    leave = [f(tx - a) - f(ty - b) for a, b in zip(px, py) if a.n > 0]
    return (diff, *jackknife(diff, leave)) if len(leave) > 1 else (diff, math.nan, math.nan)


def cknna_difference(ref: KnnResult, x: KnnResult, y: KnnResult, k: int,
                     groups: int = GROUPS) -> tuple[float, float, float]:
    """(CKNNA(ref, x) − CKNNA(ref, y), its 95% interval): the same groups of points left out of both, the
    jackknife taken on the difference."""
    ra, xa, sr, sx = _aligned(ref, x, k)
    rb, yb, sr2, sy = _aligned(ref, y, k)
    n = len(ra)
    if len(rb) != n or n < 4 + groups:
        raise InputError(f"CKNNA differences need the same points in every file, more than {4 + groups}",
                         field="knn")
    diff = _cknna_value(ra, xa, sr, sx, n) - _cknna_value(rb, yb, sr2, sy, n)
    bounds = np.linspace(0, n, groups + 1).astype(int)
    leave = []
    for g in range(groups):
        keep = np.ones(n, bool)
        keep[bounds[g]:bounds[g + 1]] = False
        leave.append(_cknna_value(ra, xa, sr, sx, n, keep) - _cknna_value(rb, yb, sr2, sy, n, keep))
    return (diff, *jackknife(diff, leave))


def cka_stores(a, b, *, block_rows: int = 65536, groups: int = GROUPS, chance_seed: int = 0) -> dict:
    """CKA (biased and debiased) between two stores of the same points, streamed, with intervals and a chance
    level (a row-permuted partner on a draw of at most CHANCE_ROWS points, `chance_seed` recorded).

    Args:
        a, b: stores (or arrays) of the same points in the same order; their widths may differ.
        block_rows: rows per streamed block (memory O(d_a·d_b + block)).
        groups: jackknife groups for the 95% interval. chance_seed: the chance level's permutation.

    Returns:
        {"cka", "cka_debiased", each with "_lo"/"_hi", their chance levels, and how they were made}.
    """
    from .vectors import Vectors

    va, vb = Vectors.of(a), Vectors.of(b)
    if len(va) != len(vb) or va.ids_sha256() != vb.ids_sha256():
        raise InputError(f"CKA: the stores hold different points, or the same points in another order ({len(va)} "
                         f"and {len(vb)} rows): embed both models on the same records with the same selection",
                         path=vb.path, field="id")
    pairs = ((xa, xb) for (_, xa), (_, xb) in zip(va.blocks(block_rows), vb.blocks(block_rows)))
    out = cka_from_blocks(pairs, groups, n=len(va))
    rng = np.random.default_rng(chance_seed)
    rows = np.sort(rng.choice(len(va), size=min(CHANCE_ROWS, len(va)), replace=False))
    xa, xb = va.take(rows, block_rows), vb.take(rows, block_rows)
    perm = rng.permutation(len(rows))
    chance = cka_from_blocks([(xa, xb[perm])], groups=1)
    out.update(cka_chance=chance["cka"], cka_debiased_chance=chance["cka_debiased"],
               chance={"seed": chance_seed, "rows": len(rows), "how": "row-permuted partner"},
               normalised="L2, as kNN", interval="delete-a-group jackknife, t with G-1 df")
    return out


# --------------------------------------------------------------------------- from neighbour files

def _aligned(a: KnnResult, b: KnnResult, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a's neighbour rows, b's in a's numbering, a's similarities, b's similarities), the first k of each, on
    the points both files cover (the agreement's own alignment rules)."""
    from .agreement import aligned_neighbours

    return aligned_neighbours(a, b, k)


def mutual_knn(a: KnnResult, b: KnnResult, k: int) -> np.ndarray:
    """Per-point |A∩B| / k (Huh et al.'s mutual_knn is its mean): 2J / (1 + J) of the per-point Jaccard J.

    Args:
        a, b: neighbour files of the same points (or the same draw). k: the neighbours compared (<= both files').

    Returns:
        An array of the per-point fractions, in a's order.
    """
    na, nb, _, _ = _aligned(a, b, k)
    inter = np.empty(len(na))
    for lo in range(0, len(na), 4096):
        x, y = na[lo:lo + 4096], nb[lo:lo + 4096]
        inter[lo:lo + 4096] = (x[:, :, None] == y[:, None, :]).any(2).sum(1)
    return inter / k


def _masked_hsic(rows, cols, kv, lv, n: int) -> float:
    """Song et al.'s unbiased HSIC of two n×n kernels nonzero only at (rows, cols) (off the diagonal), holding
    kv and lv there: the O(nnz) form of platonic-rep's hsic_unbiased(mask * K, mask * L)."""
    key = rows * n + cols
    order = np.argsort(key)
    key_s, kv_s = key[order], kv[order]
    transposed = cols * n + rows  # Σ K̃ ∘ L̃ᵀ: the entries (i, j) whose (j, i) is also masked
    pos = np.searchsorted(key_s, transposed)
    pos = np.minimum(pos, len(key_s) - 1)
    hit = key_s[pos] == transposed
    tr = float((lv[hit] * kv_s[pos[hit]]).sum())
    col_k = np.bincount(cols, weights=kv, minlength=n)  # Σ_i K̃_ij
    row_l = np.bincount(rows, weights=lv, minlength=n)  # Σ_l L̃_jl
    one_kl = float(col_k @ row_l)
    return (tr + float(kv.sum()) * float(lv.sum()) / ((n - 1) * (n - 2)) - 2 * one_kl / (n - 2)) / (n * (n - 3))


def _cknna_value(na, nb, sa, sb, n: int, keep: np.ndarray | None = None) -> float:
    """CKNNA of neighbour lists over n points (rows of na/nb are points 0..n-1); keep: a boolean mask of the
    points kept (the jackknife drops a group: its rows, and pairs pointing at it)."""
    k = na.shape[1]
    rows = np.repeat(np.arange(len(na)), k)
    ca, cb, ka, lb = na.ravel(), nb.ravel(), sa.ravel().astype(np.float64), sb.ravel().astype(np.float64)
    if keep is not None:
        index = np.cumsum(keep) - 1  # renumber the kept points 0..m-1
        ok_a, ok_b = keep[rows] & keep[ca], keep[rows] & keep[cb]
        ra, ca, ka = index[rows[ok_a]], index[ca[ok_a]], ka[ok_a]
        rb, cb, lb = index[rows[ok_b]], index[cb[ok_b]], lb[ok_b]
        n = int(keep.sum())
    else:
        ra = rb = rows
    # the mutual pairs: (i, j) with j in both lists of i; K there from a's file, L there from b's
    key_a, key_b = ra * n + ca, rb * n + cb
    common, ia, ib = np.intersect1d(key_a, key_b, assume_unique=True, return_indices=True)
    mr, mc = common // n, common % n
    kl = _masked_hsic(mr, mc, ka[ia], lb[ib], n)
    kk = _masked_hsic(ra, ca, ka, ka, n)  # K with itself: the mask is a's own top-k
    ll = _masked_hsic(rb, cb, lb, lb, n)
    return kl / (math.sqrt(kk * ll) + 1e-6) if kk * ll >= 0 else math.nan


def cknna(a: KnnResult, b: KnnResult, k: int, groups: int = GROUPS) -> dict:
    """CKNNA (platonic-rep's definition, unbiased, topk = k) from two self-kNN files of the same points, with a
    delete-a-group jackknife interval (groups of contiguous points).

    Args:
        a, b: exhaustive self-kNN files of the same points. k: the mutual-neighbour mask's k (>= 2).
        groups: jackknife groups for the 95% interval.

    Returns:
        {"cknna": value, "cknna_lo", "cknna_hi"}.
    """
    if k < 2:
        raise InputError(f"CKNNA needs k >= 2 (got {k}): with one neighbour the masked kernels are too sparse for "
                         "the unbiased HSIC", field="k")
    if a.sample is not None or b.sample is not None or a.bank_ids is not None or b.bank_ids is not None:
        raise InputError("CKNNA needs exhaustive self-kNN files (every point's neighbours among the same points): "
                         "a sampled file or a search against a bank masks pairs it cannot see", field="knn")
    na, nb, sa, sb = _aligned(a, b, k)
    n = len(na)
    if n < 4 + groups:
        raise InputError(f"CKNNA needs more than {4 + groups} points (have {n})", field="knn")
    value = _cknna_value(na, nb, sa, sb, n)
    bounds = np.linspace(0, n, groups + 1).astype(int)
    leave = []
    for g in range(groups):
        keep = np.ones(n, bool)
        keep[bounds[g]:bounds[g + 1]] = False
        leave.append(_cknna_value(na, nb, sa, sb, n, keep))
    lo, hi = jackknife(value, leave)
    return {"cknna": value, "cknna_lo": lo, "cknna_hi": hi, "n": n, "k": k}


def cknna_chance(a: KnnResult, b: KnnResult, k: int, seed: int = 0) -> float:
    """CKNNA of `a` against `b` with b's points permuted (seeded): the level two unrelated models reach."""
    na, nb, sa, sb = _aligned(a, b, k)
    n = len(na)
    perm = np.random.default_rng(seed).permutation(n)
    inverse = np.empty(n, dtype=np.int64)
    inverse[perm] = np.arange(n)
    return _cknna_value(na, inverse[nb[perm]], sa, sb[perm], n)


def _mutual_knn_cells(a: KnnResult, b: KnnResult, k: int, reps: int, seed: int) -> dict:
    from .agreement import knn_basis
    from .uncertainty import mean_interval

    per = mutual_knn(a, b, k)
    lo, hi = mean_interval(per, reps) if reps > 0 else (math.nan, math.nan)
    return {"mutual_knn": float(per.mean()), "mutual_knn_lo": lo, "mutual_knn_hi": hi,
            "mutual_knn_chance": k / (a.n_targets - 1), "mutual_knn_basis": knn_basis(a, b)}


def _mutual_knn_difference(r: KnnResult, x: KnnResult, y: KnnResult, k: int, reps: int):
    from .uncertainty import paired_mean_difference

    return paired_mean_difference(mutual_knn(r, x, k), mutual_knn(r, y, k), reps)


def _cknna_cells(a: KnnResult, b: KnnResult, k: int, reps: int, seed: int) -> dict:
    r = cknna(a, b, k)
    return {"cknna": r["cknna"], "cknna_lo": r["cknna_lo"], "cknna_hi": r["cknna_hi"],
            "cknna_chance": cknna_chance(a, b, k, seed),
            "cknna_basis": f"exhaustive: all {r['n']} points, jackknife over {GROUPS} groups"}


def _cka_cells(name: str):
    def cells(a, b, k: int, reps: int, seed: int) -> dict:
        r = cka_stores(a, b, chance_seed=seed)
        return {name: r[name], f"{name}_lo": r[f"{name}_lo"], f"{name}_hi": r[f"{name}_hi"],
                f"{name}_chance": r[f"{name}_chance"],
                f"{name}_basis": f"exhaustive: all {r['n']} points, L2-normalised, jackknife over {r['groups']} "
                                 f"groups; chance: row-permuted partner on {r['chance']['rows']} points, seed {seed}"}
    return cells


@dataclass(frozen=True)
class Measure:
    """One representation measure, declared once: what it reads, how it is labelled, how its row cells (value,
    `_lo`/`_hi` interval, `_chance`, `_basis`) and its paired difference against a reference are computed. `agree`,
    the report's tables and its noise verdicts all read this registry; a new measure touches only it and its own
    functions."""

    name: str
    label: str
    needs: str  # "knn" (neighbour files) or "store" (embedding stores)
    what: str = ""
    cells: Callable | None = None  # (a, b, k, reps, seed) -> row cells; a, b: KnnResults or Stores, by `needs`
    difference: Callable | None = None  # (ref, x, y, k, reps) -> (difference, lo, hi), paired
    per_k: bool = True  # False: the value does not depend on K (computed once per pair)

    @property
    def columns(self) -> list[tuple[str, str]]:
        """(column, heading) of its value, then of its chance level."""
        return [(self.name, self.label), (f"{self.name}_chance", f"{self.label}: chance")]


MEASURES = {
    "jaccard": Measure("jaccard", "kNN Jaccard (the paper's)", "knn", "mean per-point Jaccard of K-neighbour sets"),
    "mutual_knn": Measure("mutual_knn", "mutual-kNN", "knn", "mean per-point |A∩B| / k (Huh et al. 2024)",
                          _mutual_knn_cells, _mutual_knn_difference),
    "cknna": Measure("cknna", "CKNNA", "knn", "CKA on mutual-neighbour pairs, unbiased HSIC (Huh et al. 2024)",
                     _cknna_cells, lambda r, x, y, k, reps: cknna_difference(r, x, y, k)),
    "cka": Measure("cka", "linear CKA", "store", "linear CKA, biased HSIC (Kornblith et al. 2019)",
                   _cka_cells("cka"), lambda r, x, y, k, reps: cka_difference(r, x, y, "cka"), per_k=False),
    "cka_debiased": Measure("cka_debiased", "linear CKA (debiased)", "store",
                            "linear CKA with Song et al.'s unbiased HSIC", _cka_cells("cka_debiased"),
                            lambda r, x, y, k, reps: cka_difference(r, x, y, "cka_debiased"), per_k=False),
}


def measure(name: str) -> Measure:
    """The registry's entry, or one line naming the known ones."""
    if name not in MEASURES:
        raise InputError(f"unknown measure {name!r} (known: {', '.join(MEASURES)})", field="measure")
    return MEASURES[name]
