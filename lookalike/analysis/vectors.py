"""The points kNN and OOD work on, as one value: a store (verified, with its ids, features and selection) or an
array of rows (ids "0".."n-1", nothing recorded). Analysis takes `Vectors.of(store_or_array)` and asks it, instead
of testing which of the two it was given."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..core.store import Store
from ..errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Vectors:
    store: Store | None = None
    array: np.ndarray | None = None

    @classmethod
    def of(cls, x: "Vectors | Store | np.ndarray") -> "Vectors":
        if isinstance(x, Vectors):
            return x
        if isinstance(x, Store):
            return cls(store=x)
        return cls(array=np.asarray(x))

    @property
    def ids(self) -> np.ndarray:
        return np.asarray(self.store.ids) if self.store is not None else np.arange(len(self.array)).astype(str)

    def ids_at(self, rows) -> np.ndarray:
        """The ids of the given rows, never every id at once (a store reads only the shards that hold them)."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.store.ids_at(rows) if self.store is not None else rows.astype(str)

    def ids_sha256(self) -> str:
        """sha256 of every id in row order (`analysis.knn.ids_sha256`), streamed from a store's shards."""
        if self.store is not None:
            return self.store.ids_sha256()
        from ..core.store import ids_sha256

        return ids_sha256(self.ids)

    @property
    def path(self) -> Path | None:
        return self.store.path if self.store is not None else None

    @property
    def label(self) -> str:
        """What a result records as the points' source: the store's path, or "array"."""
        return str(self.store.path) if self.store is not None else "array"

    @property
    def dim(self) -> int:
        return self.store.dim if self.store is not None else int(self.array.shape[1])

    @property
    def vector_dim(self) -> int:
        """Dimensions of the vectors compared (a binary store's bytes hold 8 each)."""
        return self.store.vector_dim if self.store is not None else int(self.array.shape[1])

    def __len__(self) -> int:
        return len(self.store) if self.store is not None else len(self.array)

    def normalized(self, block_rows: int = 65536) -> np.ndarray:
        """float32 L2-normalised rows (a binary store's ±1 vectors); InputError naming rows with NaN/inf,
        a warning for all-zero rows."""
        if self.store is None:
            x = np.ascontiguousarray(self.array, dtype=np.float32).copy()
        else:
            x = np.empty((len(self.store), self.store.vector_dim), dtype=np.float32)
            for start, block in self.store.iter_vectors(block_rows):
                x[start:start + len(block)] = block
        if len(x) == 0:
            raise InputError("empty store: no vectors", path=self.path)
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise InputError(f"NaN/inf in the vectors of ids {[str(i) for i in self.ids[bad][:5]]}", path=self.path,
                             field="embedding")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        zero = np.flatnonzero(norms[:, 0] == 0)
        if len(zero):  # no direction: every cosine with it is 0, so its neighbours are arbitrary ties
            log.warning("%s: %d all-zero vectors (ids %s%s); their neighbours are ties at similarity 0",
                        self.path or "vectors", len(zero), [str(i) for i in self.ids[zero[:3]]],
                        ", ..." if len(zero) > 3 else "")
        x /= np.maximum(norms, 1e-12)
        return x


    def blocks(self, rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 L2-normalised rows) blocks in store order, never the whole store: O(rows × dim)
        memory. NaN/inf rows are refused as `normalized` refuses them, block by block."""
        if self.store is None:
            source = ((lo, np.asarray(self.array[lo:lo + rows], dtype=np.float32)) for lo in range(0, len(self), rows))
        else:
            source = self.store.iter_vectors(rows)
        for start, block in source:
            yield start, _normalize(np.array(block, dtype=np.float32), self, start)

    def take(self, rows: np.ndarray, block_rows: int = 65536) -> np.ndarray:
        """float32 L2-normalised vectors of the given rows (sorted, unique), gathered in one streamed pass:
        O(len(rows) × dim + block) memory."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.vector_dim), np.float32)
        if len(rows) == 0:
            return out
        for start, block in self.blocks(block_rows):
            lo, hi = np.searchsorted(rows, [start, start + len(block)])
            out[lo:hi] = block[rows[lo:hi] - start]
            if start + len(block) > rows[-1]:  # every asked row read: the rest of the store is not
                break
        return out


def _normalize(x: np.ndarray, v: "Vectors", start: int) -> np.ndarray:
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        ids = v.ids[start + np.flatnonzero(bad)[:5]]
        raise InputError(f"NaN/inf in the vectors of ids {[str(i) for i in ids]}", path=v.path, field="embedding")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms[:, 0] == 0).any():
        zero = np.flatnonzero(norms[:, 0] == 0)
        log.warning("%s: all-zero vectors at rows %s%s; their neighbours are ties at similarity 0",
                    v.path or "vectors", (start + zero[:3]).tolist(), ", ..." if len(zero) > 3 else "")
    x /= np.maximum(norms, 1e-12)
    return x


def load_normalized(x: "Vectors | Store | np.ndarray", block_rows: int = 65536) -> np.ndarray:
    """`Vectors.of(x).normalized()`: float32 L2-normalised rows of a store or an array."""
    return Vectors.of(x).normalized(block_rows)
