"""core/precision.py against independent references: sentence-transformers' quantize_embeddings for the codes,
numpy's own bit arithmetic for binary, hand-made ranges for the checks, and the property that distinct rows never
collapse to one code row because of a degenerate calibration range."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lookalike.core import precision as P
from lookalike.errors import InputError, StoreError

finite = st.floats(-8, 8, allow_nan=False, width=32)
blocks = hnp.arrays(np.float32, st.tuples(st.integers(1, 12), st.sampled_from([8, 16, 24])), elements=finite)


def _st_quantize(x, precision, ranges=None):
    from sentence_transformers.quantization import quantize_embeddings

    return quantize_embeddings(x, precision=precision, ranges=ranges)


@given(blocks)
def test_int8_and_uint8_codes_equal_sentence_transformers(x):
    r = np.vstack((x.min(0) - 1, x.max(0) + 1)).astype(np.float32)  # non-degenerate: ST divides by the step
    for precision in ("int8", "uint8"):
        ours = P.quantize(x, precision, r)
        np.testing.assert_array_equal(ours, _st_quantize(x, precision, r))
        assert ours.dtype == P.stored_dtype(precision)


@given(blocks)
def test_binary_and_ubinary_equal_sentence_transformers_and_round_trip_to_signs(x):
    for precision in ("binary", "ubinary"):
        ours = P.quantize(x, precision)
        np.testing.assert_array_equal(ours, _st_quantize(x, precision))
        back = P.signs(ours, precision, x.shape[1])
        np.testing.assert_array_equal(back, np.where(x > 0, 1.0, -1.0).astype(np.float32))


def test_float_precisions_are_casts():
    x = np.array([[1.5, -2.25, 3e-3]], dtype=np.float64)
    assert P.quantize(x, "float16").dtype == np.float16
    np.testing.assert_array_equal(P.quantize(x, "float32"), x.astype(np.float32))


def test_codes_by_hand():
    r = np.array([[0.0, -1.0], [255.0, 1.0]], dtype=np.float32)
    x = np.array([[0.0, -1.0], [1.0, 0.0], [254.99, 0.995], [300.0, -5.0]], dtype=np.float32)
    np.testing.assert_array_equal(P.quantize(x, "uint8", r), [[0, 0], [1, 127], [254, 254], [255, 0]])
    np.testing.assert_array_equal(P.quantize(x, "int8", r), [[-128, -128], [-127, -1], [126, 126], [127, -128]])
    with pytest.raises(InputError, match="calibration ranges"):
        P.quantize(x, "int8")
    with pytest.raises(InputError, match="unknown precision"):
        P.quantize(x, "int4")


def test_ranges_are_min_and_max_per_dimension():
    x = np.array([[1, -2, 5], [3, 0, 5.5]], dtype=np.float32)
    np.testing.assert_array_equal(P.calibration_ranges(x), [[1, -2, 5], [3, 0, 5.5]])
    with pytest.raises(InputError, match="at least one vector"):
        P.calibration_ranges(np.zeros((0, 3), np.float32))


def test_a_constant_dimension_gets_a_real_range_and_a_warning(caplog):
    x = np.array([[1, 7, 5], [3, 7, 6], [2, 7, 8]], dtype=np.float32)
    with caplog.at_level(logging.WARNING):
        r = P.calibration_ranges(x)
    assert "1 of 3 dimensions are constant" in caplog.text and "[1]" in caplog.text
    w = np.median([(3 - 1) / 2, (8 - 5) / 2])  # the other dimensions' median half-width
    np.testing.assert_allclose(r[:, 1], [7 - w, 7 + w])
    np.testing.assert_array_equal(r[:, [0, 2]], [[1, 5], [3, 8]])


@given(hnp.arrays(np.float32, st.tuples(st.integers(2, 30), st.just(16)),
                  elements=st.floats(-4, 4, allow_nan=False, width=32), unique=False),
       st.integers(1, 3))
def test_distinct_rows_never_collapse_because_of_the_ranges(x, n_cal):
    """Rows that differ by more than a step in some dimension keep different codes, however few calibration rows
    fixed the ranges (one row: every dimension constant)."""
    r = P.calibration_ranges(x[:n_cal])
    step = (r[1] - r[0]) / 255
    inside = (x >= r[0]) & (x <= r[1])
    codes = P.quantize(x, "int8", r)
    for i in range(len(x)):
        for j in range(i):
            apart = (np.abs(x[i] - x[j]) > 2 * step) & inside[i] & inside[j]
            if apart.any():
                assert not np.array_equal(codes[i], codes[j]), (i, j)


def test_one_calibration_row_no_longer_maps_every_row_to_one_code():
    x = (0.1 * np.random.default_rng(0).normal(size=(21, 32))).astype(np.float32)  # unit-norm-like scale
    codes = P.quantize(x, "int8", P.calibration_ranges(x[:1]))
    assert len({c.tobytes() for c in codes}) == 21


@pytest.mark.parametrize("ranges, needle", [
    (np.zeros((2, 4)), "shape"),
    ([[0, 0, 0], [1, 1, np.nan]], "finite"),
    ([[0, 2, 0], [1, 1, 1]], "minimum <= maximum"),
    ([["a", "b", "c"], ["d", "e", "f"]], "not numbers"),
])
def test_check_ranges_refuses_each_bad_shape(ranges, needle):
    with pytest.raises(InputError, match=needle):
        P.check_ranges(ranges, 3, "store.json")
    np.testing.assert_array_equal(P.check_ranges([[0, 0, 0], [1, 1, 1]], 3, "s"), [[0, 0, 0], [1, 1, 1]])


def test_stored_dims_and_kinds():
    assert P.stored_dim("binary", 384) == 48 and P.stored_dim("float16", 384) == 384
    with pytest.raises(InputError, match="multiple of 8"):
        P.stored_dim("ubinary", 12)
    assert P.precision_of({}) == "float32" and P.precision_of({"dtype": "int8"}) == "int8"
    assert [P.vector_kind({"dtype": d}) for d in ("float16", "float32", "binary", "uint8")] == \
        ["float", "float", "binary", "uint8"]
    with pytest.raises(StoreError, match="int8 codes"):
        P.refuse_quantised({"dtype": "int8"}, "s", "kNN")
    P.refuse_quantised({"dtype": "binary"}, "s", "kNN")
    assert P.stored_dtype("binary") == np.int8 and P.stored_dtype("ubinary") == np.uint8


def test_every_refusal_names_its_field_and_says_what_to_do():
    with pytest.raises(InputError) as e:
        P.calibration_ranges(np.zeros((0, 3), np.float32))
    assert str(e.value) == "field 'precision': int8/uint8 calibration needs at least one vector"
    for bad, text in (([["a", "b", "c"], ["d", "e", "f"]], "s.json: int8 ranges are not numbers"),
                      (np.zeros((2, 4)), "s.json: int8 ranges of shape (2, 4), need (2, 3) (minimum and maximum of "
                                         "each dimension)"),
                      ([[0, 2, 0], [1, 1, 1]], "s.json: int8 ranges must be finite with minimum <= maximum")):
        with pytest.raises(InputError) as e:
            P.check_ranges(bad, 3, "s.json")
        assert e.value.field == "ranges" and str(e.value) == f"field 'ranges': {text}"
    np.testing.assert_array_equal(P.check_ranges([[0, 1, 2], [0, 2, 2]], 3, "s"), [[0, 1, 2], [0, 2, 2]])  # min == max
    with pytest.raises(StoreError) as e:
        P.refuse_quantised({"dtype": "uint8"}, "runs/s", "kNN")
    assert str(e.value).endswith("kNN by cosine over them would not be the model's similarity: embed with --precision "
                                 "float32/float16, or binary/ubinary (exact Hamming)")
    assert str(e.value).startswith("runs/s: holds uint8 codes (per-dimension scales); ")
    with pytest.raises(InputError) as e:
        P.stored_dim("binary", 12)
    assert e.value.field == "precision"


def test_ranges_are_float32_whatever_the_input_and_say_which_dimensions(caplog):
    ints = np.array([[1, 7], [3, 7]], dtype=np.int64)  # a constant integer dimension: widened by a fraction
    r = P.calibration_ranges(ints)
    assert r.dtype == np.float32
    np.testing.assert_allclose(r, [[1, 6], [3, 8]])
    zeros = P.calibration_ranges(np.zeros((1, 3), np.float32))  # no scale at all: the smallest range, 1e-6
    np.testing.assert_allclose(zeros, [[-1e-6] * 3, [1e-6] * 3])
    caplog.clear()
    import logging

    with caplog.at_level(logging.WARNING):
        P.calibration_ranges(np.ones((2, 10), np.float32))
    assert caplog.messages == ["int8 calibration: 10 of 10 dimensions are constant over the 2 calibration rows "
                               "(dimensions [0, 1, 2, 3, 4, 5, 6, 7], ...); each gets the range of its value ± 1 "
                               "instead of a single value, so distinct rows keep distinct codes"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        P.calibration_ranges(np.ones((2, 8), np.float32))
    assert "(dimensions [0, 1, 2, 3, 4, 5, 6, 7]);" in caplog.messages[0]


def test_signs_are_float32_plus_minus_one():
    s = P.signs(np.array([[0b10100000]], dtype=np.uint8), "ubinary", 3)
    assert s.dtype == np.float32 and s.tolist() == [[1.0, -1.0, 1.0]]
    b = P.signs(np.array([[0b10100000 - 128]], dtype=np.int8), "binary", 3)
    assert b.dtype == np.float32 and b.tolist() == [[1.0, -1.0, 1.0]]


def test_quantize_edges_exactly():
    x = np.array([[0.5, -0.5, 2.0]], dtype=np.float64)
    for precision in ("int8", "uint8", "binary", "ubinary", "float32", "float16"):
        r = np.array([[0, -1, 2], [1, 0, 2]], np.float32)  # the third dimension's range is one value
        got = P.quantize(x, precision, r)
        assert got.dtype == P.stored_dtype(precision), precision
    # a range of one value: that dimension's codes are the lowest step (no division by zero, no NaN)
    r = np.array([[0, -1, 2], [1, 0, 2]], np.float32)
    assert P.quantize(x, "uint8", r).tolist() == [[127, 127, 0]]
    assert P.quantize(x, "int8", r).tolist() == [[-1, -1, -128]]
    assert P.quantize(np.array([[0.1] * 8]), "binary").tolist() == [[127]]  # 0b11111111 - 128
    f32 = np.ones((2, 3), np.float32)
    assert P.quantize(f32, "float32") is f32  # no copy of what already is float32
    for bad, kw in (("int8", {}), ("int4", {"ranges": r})):
        with pytest.raises(InputError) as e:
            P.quantize(x, bad, **kw)
        assert e.value.field == "precision"
    with pytest.raises(InputError) as e:
        P.quantize(x, "int4")
    assert "known: float32, float16, int8, uint8, binary, ubinary" in str(e.value)
    assert P.stored_dim("ubinary", 384) == 48 and isinstance(P.stored_dim("ubinary", 384), int)
