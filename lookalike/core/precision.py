"""Stored precision of a store's vectors: float32/float16, or quantised as sentence-transformers quantises them.

    int8 / uint8      per dimension, 256 steps between a calibration range's minimum and maximum
                      (sentence-transformers' `quantize_embeddings(..., ranges=...)`); the ranges are fixed once
                      per store and recorded in its manifest, so every shard and every resume quantises alike
    binary / ubinary  the sign of each dimension, 8 to a byte (np.packbits); binary shifts each byte by -128
                      into int8, as sentence-transformers does

Similarity on a binary store is exact Hamming: the ±1 vectors the bits stand for have cosine 1 − 2·h/d, so the
ordinary cosine machinery ranks by Hamming distance h. int8/uint8 codes are not vectors to compare by cosine
(each dimension has its own scale and offset); analysis refuses them with one line instead of a wrong number.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError, StoreError

FLOATS = ("float32", "float16")
QUANTISED = ("int8", "uint8")
BITS = ("binary", "ubinary")
PRECISIONS = FLOATS + QUANTISED + BITS
_STORED = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8, "binary": np.int8,
           "ubinary": np.uint8}
DEFAULT_CALIBRATION_ROWS = 1000

log = logging.getLogger(__name__)


def stored_dtype(precision: str) -> np.dtype:
    return np.dtype(_STORED[precision])


def stored_dim(precision: str, dim: int) -> int:
    """Columns stored for `dim` dimensions: a byte per 8 under binary/ubinary."""
    if precision in BITS:
        if dim % 8:
            raise InputError(f"--precision {precision} packs 8 dimensions to a byte; {dim} dimensions is not a "
                             "multiple of 8 (give --truncate-dim a multiple of 8)", field="precision")
        return dim // 8
    return dim


def calibration_ranges(x: np.ndarray) -> np.ndarray:
    """(2, dim) float32: each dimension's minimum and maximum over the calibration vectors.

    A dimension whose minimum equals its maximum (one calibration row, or a feature constant over them) would
    put every other value at one end step, so distinct rows could collapse to one code row. It gets the range
    c ± w instead, around its one value c, with w the median half-width of the other dimensions' ranges (when
    every dimension is constant: the mean absolute value of the calibration vectors, at least 1e-6), and a
    warning names the dimensions."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise InputError("int8/uint8 calibration needs at least one vector", field="precision")
    lo, hi = x.min(axis=0), x.max(axis=0)
    flat = np.flatnonzero(lo == hi)
    if len(flat):
        spread = (hi - lo)[lo != hi] / 2
        w = float(np.median(spread)) if len(spread) else max(float(np.abs(x).mean()), 1e-6)
        lo, hi = lo.copy(), hi.copy()
        lo[flat] -= w
        hi[flat] += w
        log.warning("int8 calibration: %d of %d dimensions are constant over the %d calibration rows (dimensions "
                    "%s%s); each gets the range of its value ± %.3g instead of a single value, so distinct rows "
                    "keep distinct codes", len(flat), x.shape[1], len(x), flat[:8].tolist(),
                    ", ..." if len(flat) > 8 else "", w)
    return np.vstack((lo, hi)).astype(np.float32)


def check_ranges(ranges, dim: int, where: str) -> np.ndarray:
    """The ranges as (2, dim) float32, or InputError naming `where`: finite, min <= max, one pair per dimension."""
    try:
        r = np.asarray(ranges, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: int8 ranges are not numbers", field="ranges") from exc
    if r.shape != (2, dim):
        raise InputError(f"{where}: int8 ranges of shape {r.shape}, need (2, {dim}) (minimum and maximum of each "
                         "dimension)", field="ranges")
    if not np.isfinite(r).all() or (r[0] > r[1]).any():
        raise InputError(f"{where}: int8 ranges must be finite with minimum <= maximum", field="ranges")
    return r


def quantize(x: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """`x` (float rows) at `precision`; int8/uint8 need `ranges` (2, dim). The arithmetic of
    sentence-transformers' quantize_embeddings (5.x): the floor of the step, clipped to the 256 steps (values
    outside the ranges take the end steps), a dimension whose range is one value at step 0."""
    if precision in FLOATS:
        return x.astype(_STORED[precision], copy=False)
    x = np.asarray(x, dtype=np.float32)
    if precision in BITS:
        packed = np.packbits(x > 0, axis=1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
    if precision in QUANTISED:
        if ranges is None:
            raise InputError(f"--precision {precision} needs calibration ranges", field="precision")
        starts = ranges[0, :]
        steps = (ranges[1, :] - ranges[0, :]) / 255
        steps = np.where(steps == 0, 1, steps)
        q = np.clip(np.floor((x - starts) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    raise InputError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})", field="precision")


def signs(block: np.ndarray, precision: str, dim: int) -> np.ndarray:
    """±1 float32 vectors (rows × dim) a binary/ubinary block stands for."""
    b = np.asarray(block)
    packed = (b.astype(np.int16) + 128).astype(np.uint8) if precision == "binary" else b.astype(np.uint8)
    bits = np.unpackbits(packed, axis=1)[:, :dim]
    return bits.astype(np.float32) * 2 - 1


def precision_of(config: dict) -> str:
    return str(config.get("dtype", "float32"))


def vector_kind(config: dict) -> str:
    """What a store's vectors are for similarity: 'float' (float32/float16: one kind), or the quantised precision."""
    p = precision_of(config)
    return "float" if p in FLOATS else p


def refuse_quantised(config: dict, path, what: str) -> None:
    """StoreError when `what` cannot run on the store's int8/uint8 codes (cosine over codes is not the model's)."""
    p = precision_of(config)
    if p in QUANTISED:
        raise StoreError(f"{path}: holds {p} codes (per-dimension scales); {what} by cosine over them would not be "
                         "the model's similarity: embed with --precision float32/float16, or binary/ubinary "
                         "(exact Hamming)")
