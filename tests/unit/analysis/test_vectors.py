"""The points kNN and OOD take, as one value: an array's rows get ids 0..n-1 and the label "array"; bad rows are
one error naming the ids; all-zero rows a warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lookalike.analysis.vectors import Vectors, load_normalized
from lookalike.errors import InputError


def test_an_array_is_points_with_row_ids():
    x = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
    v = Vectors.of(x)
    assert Vectors.of(v) is v and v.store is None and v.label == "array" and v.path is None
    assert list(v.ids) == ["0", "1", "2"] and len(v) == 3 and v.dim == 2
    n = v.normalized()
    assert n.dtype == np.float32 and np.allclose(n, [[0.6, 0.8], [0, 1], [1, 0]])
    assert np.array_equal(load_normalized(x), n) and np.array_equal(x[0], [3.0, 4.0])  # the input is not changed


def test_bad_rows_are_named(caplog):
    with pytest.raises(InputError, match=r"NaN/inf in the vectors of ids \['1'\]"):
        Vectors.of(np.array([[1.0, 0.0], [np.nan, 1.0]])).normalized()
    with pytest.raises(InputError, match="empty store"):
        Vectors.of(np.zeros((0, 4))).normalized()
    caplog.set_level(logging.WARNING)
    out = Vectors.of(np.array([[0.0, 0.0], [1.0, 1.0]])).normalized()
    assert np.array_equal(out[0], [0, 0]) and "1 all-zero vectors (ids ['0']" in caplog.text
