"""A store's ids at any size: streamed readers equal their dense definitions, and opening, verifying, drawing a
sample and comparing overlap never hold every id as Python strings (the dense column is made to fail here)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lookalike.analysis.knn import knn_sampled
from lookalike.analysis.ood import _shared_ids
from lookalike.core import store as store_mod
from lookalike.core.store import first_repeat, id_digests, ids_sha256, open_store
from lookalike.errors import StoreError
from support import make_store

IDS = st.lists(st.text(min_size=1, max_size=6).filter(lambda t: "\0" not in t), min_size=1, max_size=30, unique=True)


def _no_dense_ids(monkeypatch):
    real = store_mod.Store._column

    def column(self, name, dtype):
        if name == "id":
            raise AssertionError("every id was read into memory")
        return real(self, name, dtype)

    monkeypatch.setattr(store_mod.Store, "_column", column)


@given(ids=IDS, shard_rows=st.integers(1, 7))
def test_streamed_ids_equal_their_dense_definitions(tmp_path_factory, ids, shard_rows):
    x = np.random.default_rng(0).normal(size=(len(ids), 2)).astype(np.float32)
    s = make_store(tmp_path_factory.mktemp("s") / "s", x, ids=ids, shard_rows=shard_rows)
    assert s.ids_sha256() == ids_sha256(ids) == hashlib.sha256("".join(i + "\0" for i in ids).encode()).hexdigest()
    rows = np.random.default_rng(1).permutation(len(ids))[: max(1, len(ids) // 2)]
    assert list(s.ids_at(rows)) == [ids[r] for r in rows]
    want = [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little") for i in ids]
    assert s.id_digests().tolist() == want
    assert [x for _, chunk in s.iter_ids() for x in chunk] == [i.encode() for i in ids]
    assert list(open_store(s.path).ids) == ids  # the entry file's ids, written a shard at a time


def test_opening_and_drawing_never_hold_every_id(tmp_path, monkeypatch):
    x = np.random.default_rng(2).normal(size=(60, 3)).astype(np.float32)
    make_store(tmp_path / "s", x, shard_rows=7)
    _no_dense_ids(monkeypatch)
    s = open_store(tmp_path / "s")  # verify: digests, not a set of strings
    res = knn_sampled(s, 3, 5)
    assert res.meta["sample"]["universe_sha256"] == ids_sha256([f"p{i}" for i in range(60)])
    assert _shared_ids(s, s) == sorted(f"p{i}" for i in range(60))


def test_a_repeated_id_is_named_with_its_rows(tmp_path):
    x = np.random.default_rng(3).normal(size=(9, 2)).astype(np.float32)
    ids = ["a", "b", "c", "b", "d", "c", "b", "e", "f"]
    from lookalike.core.store import StoreWriter

    cfg = {"model_sha256": "m" * 64, "pooling": "cls", "normalize": False, "max_length": 16}
    with StoreWriter(tmp_path / "s", cfg, 2, 4) as w:
        w.append(ids, x, np.full(9, 3), np.zeros(9, bool))
        w.finalize()
    with pytest.raises(StoreError) as err:
        open_store(tmp_path / "s")
    assert f"{tmp_path / 's'}: id 'b' is at rows 1 and 3; a store's ids are unique" in str(err.value)


def test_equal_digests_are_confirmed_on_the_ids():
    digests = np.array([5, 7, 5, 9, 7], np.uint64)  # a collision of different ids at 5; a real repeat at 7
    ids = ["x", "y", "z", "w", "y"]
    assert first_repeat(digests, lambda rows: np.array([ids[r] for r in rows], dtype=object)) == ((1, 4), "y")
    assert first_repeat(np.array([5, 5], np.uint64), lambda rows: np.array(["p", "q"], dtype=object)) is None
    assert first_repeat(np.array([], np.uint64), None) is None
    assert id_digests([]).dtype == np.uint64 and len(id_digests([])) == 0
    assert id_digests([["a"], [b"a"]]).tolist()[0] == id_digests([["a"], [b"a"]]).tolist()[1]


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m.__setitem__("dim", "384"), "field 'dim' is '384', not a positive integer"),
    (lambda m: m.__setitem__("dim", True), "field 'dim' is True, not a positive integer"),
    (lambda m: m.__setitem__("complete", "yes"), "field 'complete' is 'yes', not true or false"),
    (lambda m: m["config"].__setitem__("max_length", "16"), "field 'config.max_length' is str, not int"),
    (lambda m: m["config"].__setitem__("normalize", 1), "field 'config.normalize' is int, not bool"),
    (lambda m: m["config"].__setitem__("limit", False), "field 'config.limit' is bool, not int"),
    (lambda m: m["config"].__setitem__("truncate_dim", "8"), "field 'config.truncate_dim' is str, not int or null"),
    (lambda m: m["config"].__setitem__("dtype", "float64"), "field 'config.dtype' is 'float64', not one of"),
])
def test_the_store_manifest_is_checked_whole(tmp_path, edit, needle):
    import json

    make_store(tmp_path / "s", np.ones((3, 2), np.float32) * np.arange(1, 4)[:, None])
    path = tmp_path / "s" / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))
    with pytest.raises(StoreError) as err:
        open_store(tmp_path / "s")
    assert str(err.value).startswith(f"{path}: {needle}") and "the manifest is damaged" in str(err.value)


def test_the_store_manifest_is_a_read_only_typed_value(tmp_path):
    import pickle

    s = make_store(tmp_path / "s", np.ones((5, 2), np.float32) * np.arange(1, 6)[:, None], shard_rows=2,
                   truncate_dim=None)
    m = s.manifest
    assert (m.dim, m.rows, m.complete, m.precision, m.n_truncated, len(m.shards)) == (2, 5, True, "float32", 0, 3)
    with pytest.raises(TypeError, match="read-only"):
        m["dim"] = 3
    with pytest.raises(TypeError, match="read-only"):
        m.update(dim=3)
    back = pickle.loads(pickle.dumps(m))
    assert type(back) is type(m) and back == m
