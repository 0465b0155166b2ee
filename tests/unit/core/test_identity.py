"""An artifact's identity as one value: equal when every field is, else the first field that differs or that one
side does not record; the feature identity of stores (float16 and float32 are one kind of vector)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lookalike.core.identity import COMPARABLE, FEATURES, Identity, comparable, features, selection

KEYS = ("a", "b", "c")
values = st.none() | st.integers(-3, 3) | st.text(max_size=3) | st.lists(st.integers(0, 3), max_size=3)


def test_the_first_difference_is_named():
    one = Identity.of({"a": 1, "b": {"x": 1}, "c": 3}, KEYS)
    assert one == Identity.of({"c": 3, "b": {"x": 1}, "a": 1}, KEYS)
    d = one.difference(Identity.of({"a": 1, "b": {"x": 2}, "c": 4}, KEYS))
    assert (d.field, d.first, d.second, d.absent) == ("b", {"x": 1}, {"x": 2}, None)
    d = one.difference(Identity.of({"a": 1, "c": 3}, KEYS))
    assert (d.field, d.absent) == ("b", "second")
    assert Identity.of({"a": None}, KEYS) != Identity.of({}, KEYS)  # None recorded is not "not recorded"
    assert Identity.of({"a": (1, 2)}, KEYS) == Identity.of({"a": [1, 2]}, KEYS)  # as stored in JSON


@given(st.dictionaries(st.sampled_from(KEYS), values), st.dictionaries(st.sampled_from(KEYS), values))
def test_equal_exactly_when_no_field_differs(a, b):
    ia, ib = Identity.of(a, KEYS), Identity.of(b, KEYS)
    assert (ia == ib) == (a == b)
    d = ia.difference(ib)
    if d is not None:
        first = next(k for k in KEYS if (k in a) != (k in b) or a.get(k) != b.get(k))
        assert d.field == first


def test_store_identities():
    base = {"model_sha256": "m", "pooling": "cls", "normalize": False, "max_length": 128, "dtype": "float32",
            "corpus_fingerprint": "f", "text_field": "text", "offset": 0}
    assert features(base) == features({**base, "dtype": "float16"})  # one kind of vector
    assert features(base).difference(features({**base, "dtype": "ubinary", "bits": 384})).field == "precision"
    assert features(base).difference(features({**base, "pooling": "mean"})).field == "pooling"
    assert [k for k, _ in features(base).fields] == list(FEATURES)
    assert selection(base) == {"corpus_fingerprint": "f", "text_field": "text", "offset": 0}
    assert set(comparable(base)) <= set(COMPARABLE) and "model_sha256" not in comparable(base)

