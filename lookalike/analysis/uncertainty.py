"""Bootstrap intervals for the agreement numbers (beyond the paper).

Representation agreement is a mean over points, so its interval resamples points. A set Jaccard (error sets,
OOD sets) is a ratio of counts over a universe of examples, so its interval resamples examples: a resample
with multiplicities w gives J* = sum(w * [a and b]) / sum(w * [a or b]). Paired differences (model X vs model
Y, both against the reference) reuse the same resamples for both sides, so a difference whose interval
excludes 0 is larger than the sampling noise of the evaluation data.
"""

from __future__ import annotations

import math

import numpy as np

REPS = 1000
LEVEL = 0.95


def resample_weights(n: int, reps: int = REPS, seed: int = 0, chunk: int = 200):
    """Yield (chunk × n) multiplicity matrices of a nonparametric bootstrap (each row sums to n), `reps` rows in all."""
    rng = np.random.default_rng(seed)
    p = np.full(n, 1.0 / n)
    done = 0
    while done < reps:
        m = min(chunk, reps - done)
        yield rng.multinomial(n, p, size=m).astype(np.float64)
        done += m


def _interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    s = samples[np.isfinite(samples)]
    if len(s) == 0:
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(s, a)), float(np.quantile(s, 1 - a))


def mean_interval(values: np.ndarray, reps: int = REPS, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of `values` (resampling the values)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return math.nan, math.nan
    means = np.concatenate([w @ values / len(values) for w in resample_weights(len(values), reps, seed)])
    return _interval(means)


def jaccard_samples(a: np.ndarray, b: np.ndarray, reps: int = REPS, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of |A∩B| / |A∪B| for boolean membership vectors over one universe."""
    inter = (a & b).astype(np.float64)
    union = (a | b).astype(np.float64)
    out = []
    for w in resample_weights(len(a), reps, seed):
        u = w @ union
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(u > 0, (w @ inter) / u, np.nan))
    return np.concatenate(out)


def jaccard_interval(a: np.ndarray, b: np.ndarray, reps: int = REPS, seed: int = 0) -> tuple[float, float]:
    return _interval(jaccard_samples(a, b, reps, seed))


def paired_mean_difference(x: np.ndarray, y: np.ndarray, reps: int = REPS, seed: int = 0) -> tuple[float, float, float]:
    """(mean(x) - mean(y), interval) for per-point values of the same points (paired resamples)."""
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    lo, hi = mean_interval(d, reps, seed)
    return float(d.mean()), lo, hi


def paired_jaccard_difference(ref: np.ndarray, x: np.ndarray, y: np.ndarray, reps: int = REPS,
                              seed: int = 0) -> tuple[float, float, float]:
    """(J(ref, x) - J(ref, y), interval) over one universe, with the same resamples on both sides."""
    def point(a, b):
        u = (a | b).sum()
        return (a & b).sum() / u if u else math.nan

    diff = point(ref, x) - point(ref, y)
    return float(diff), *_interval(jaccard_samples(ref, x, reps, seed) - jaccard_samples(ref, y, reps, seed))
