"""The kNN module's contract, word for word: what a neighbour file records (meta, draw, checksum), every refusal
(message, file, field), the caller's choices reaching the search (GPU, block sizes, the from-disk switch), and the
exact rows against a brute-force numpy reference on points full of copies and ties."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lookalike.analysis import knn as knn_mod
from lookalike.analysis.knn import (KnnResult, duplicate_groups, ids_sha256, knn_of_rows, knn_sampled, knn_self,
                                    knn_self_exact, knn_self_from_disk, load_knn, sample_rows)
from lookalike.analysis.vectors import Vectors
from lookalike.errors import InputError
from support import make_store


def _brute(x, k, rows=None):
    """The rule by definition: cosine, rounded to 6 decimals, descending; ties by row; self excluded by row."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = (u @ u.T).astype(np.float32)
    rows = np.arange(len(x)) if rows is None else rows
    out_r, out_s = [], []
    for q in rows:
        cand = [j for j in range(len(x)) if j != q]
        cand.sort(key=lambda j: (-round(float(s[q, j]), 6), j))
        out_r.append(cand[:k])
        out_s.append([s[q, j] for j in cand[:k]])
    return np.array(out_s, np.float32), np.array(out_r, np.int64)


def _grid(n, dim, seed, copies):
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(n, dim)).astype(np.float32)
    x[np.all(x == 0, axis=1)] = 1
    for i in range(copies):
        x[(5 * i + 1) % n] = x[(3 * i + 2) % n]
    return x


@given(n=st.integers(3, 40), dim=st.integers(1, 4), k=st.integers(1, 8), seed=st.integers(0, 9),
       copies=st.integers(0, 12), block_rows=st.integers(1, 9), bank_rows=st.integers(1, 13))
def test_exact_self_knn_is_the_definition_with_copies_and_ties(n, dim, k, seed, copies, block_rows, bank_rows):
    x = _grid(n, dim, seed, copies)
    k = min(k, n - 1)
    want_s, want_r = _brute(x, k)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s, r = knn_self_exact(u, k, block_rows=block_rows, bank_rows=bank_rows)
    np.testing.assert_array_equal(r, want_r)
    np.testing.assert_allclose(s, want_s, atol=1e-6)
    assert s.dtype == np.float32 and r.dtype == np.int64
    res = knn_self(x, k, block_rows=block_rows, bank_rows=bank_rows)
    np.testing.assert_array_equal(res.neighbors, want_r)


@given(n=st.integers(0, 12), dim=st.integers(1, 3), seed=st.integers(0, 5))
def test_duplicate_groups_are_the_definition(n, dim, seed):
    x = np.random.default_rng(seed).integers(0, 2, size=(n, dim)).astype(np.float32)
    got = duplicate_groups(x)
    firsts = []
    for i in range(n):
        if not any((x[j] == x[i]).all() for j in firsts):
            firsts.append(i)
    if len(firsts) == n:
        assert got is None
        return
    first, group, members, offsets = got
    assert first.tolist() == firsts
    want_group = [next(g for g, f in enumerate(firsts) if (x[f] == x[i]).all()) for i in range(n)]
    assert group.tolist() == want_group
    assert members.tolist() == sorted(range(n), key=lambda i: (want_group[i], i))
    assert offsets.tolist() == [sum(1 for g in want_group if g < t) for t in range(len(firsts) + 1)]


def test_two_copies_are_a_group():
    first, group, members, offsets = duplicate_groups(np.ones((2, 3), np.float32))
    assert first.tolist() == [0] and group.tolist() == [0, 0] and members.tolist() == [0, 1]
    assert offsets.tolist() == [0, 2]
    assert duplicate_groups(np.ones((1, 3), np.float32)) is None


def test_defaults_are_the_documented_ones():
    for fn, want in ((knn_self, {"k": 10, "block_rows": 8192, "recall_sample": 1000, "seed": 0, "bank_rows": 65536}),
                     (knn_sampled, {"k": 10, "m": 10000, "seed": 0, "block_rows": 8192, "bank_rows": 65536}),
                     (knn_of_rows, {"block_rows": 8192, "bank_rows": 65536}),
                     (knn_self_exact, {"block_rows": 8192, "bank_rows": 65536}),
                     (knn_mod.knn_self_streamed, {"block_rows": 8192, "bank_rows": 65536, "exclude_self": True}),
                     (knn_self_from_disk, {"block_rows": 8192, "bank_rows": 65536})):
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in want} == want, fn.__name__


# ----------------------------------------------------------------------------- what a file records

def test_self_knn_meta_of_a_store(tmp_path):
    x = _grid(30, 3, 0, 4)
    store = make_store(tmp_path / "s", x)
    res = knn_self(store, 4)
    seconds = res.meta.pop("seconds")
    assert isinstance(seconds, float) and 0 <= seconds < 60 and round(seconds, 3) == seconds
    assert res.meta == {"gpu": False, "n": 30, "dim": 3, "metric": "cosine", "self_excluded_by": "row",
                        "store": str(tmp_path / "s"), "precision": "float32", "model_sha256": "m" * 64,
                        "pooling": "cls", "normalize": False, "max_length": 16}
    assert res.index == "flat" and res.k == 4 and list(res.ids) == [f"p{i}" for i in range(30)]


def test_sampled_meta_records_the_draw(tmp_path):
    x = _grid(40, 3, 1, 3)
    store = make_store(tmp_path / "s", x, ids=[f"id-{i}" for i in range(40)])
    res = knn_sampled(store, 3, 7, seed=5)
    rows = sample_rows(40, 7, 5)
    seconds = res.meta.pop("seconds")
    assert isinstance(seconds, float) and round(seconds, 3) == seconds
    drawn = [f"id-{r}" for r in rows]
    assert res.meta == {"gpu": False, "n": 40, "dim": 3, "metric": "cosine", "self_excluded_by": "row",
                        "sample": {"m": 7, "n": 40, "seed": 5, "ids_sha256": ids_sha256(drawn),
                                   "universe_sha256": ids_sha256([f"id-{i}" for i in range(40)])},
                        "store": str(tmp_path / "s"), "precision": "float32", "model_sha256": "m" * 64,
                        "pooling": "cls", "normalize": False, "max_length": 16}
    assert list(res.ids) == drawn and res.index == "flat"
    np.testing.assert_array_equal(res.neighbors, _brute(x, 3, rows)[1])


def test_ids_digest_is_each_id_then_nul():
    assert ids_sha256(["a", "bc"]) == hashlib.sha256(b"a\0bc\0").hexdigest()
    assert ids_sha256([]) == hashlib.sha256(b"").hexdigest()


def test_the_content_checksum_is_pinned():
    """Files written by earlier versions must keep verifying: the checksum's definition is fixed."""
    r = KnnResult(np.array(["a", "b", "c"]), np.array([[1], [2], [0]]), np.array([[0.5], [0.25], [1.0]], np.float32),
                  1, "flat", {"z": 1, "a": [1, 2], "seconds": 9.5})
    h = hashlib.sha256()
    for a in (np.array([[1], [2], [0]], np.int64), np.array([[0.5], [0.25], [1.0]], np.float32)):
        h.update(str(a.shape).encode() + a.tobytes())
    h.update(b"a\0b\0c")
    h.update(json.dumps([1, "flat", {"a": [1, 2], "z": 1}], sort_keys=True).encode())
    assert r.content_sha256() == h.hexdigest()
    shuffled = KnnResult(r.ids, r.neighbors, r.similarity, 1, "flat", {"a": [1, 2], "z": 1})  # order, seconds
    assert shuffled.content_sha256() == r.content_sha256()
    banked = KnnResult(r.ids, r.neighbors, r.similarity, 1, "flat", {"a": [1, 2], "z": 1}, np.array(["x", "y", "w"]))
    h.update(b"")
    g = hashlib.sha256()
    for a in (np.array([[1], [2], [0]], np.int64), np.array([[0.5], [0.25], [1.0]], np.float32)):
        g.update(str(a.shape).encode() + a.tobytes())
    g.update(b"a\0b\0c")
    g.update(b"\0bank\0x\0y\0w")
    g.update(json.dumps([1, "flat", {"a": [1, 2], "z": 1}], sort_keys=True).encode())
    assert banked.content_sha256() == g.hexdigest()
    assert KnnResult(r.ids, r.neighbors, r.similarity, 1, "hnsw", {}).content_sha256() != \
        KnnResult(r.ids, r.neighbors, r.similarity, 1, "flat", {}).content_sha256()


def test_a_file_round_trips_with_its_bank_ids(tmp_path):
    r = KnnResult(np.array(["q1", "q2"]), np.array([[1, 0], [2, 1]]), np.array([[0.9, 0.5], [0.8, 0.1]], np.float32),
                  2, "flat", {"n": 2, "seconds": 1.0}, np.array(["b0", "b1", "bé"]))
    r.save(tmp_path / "x.knn.h5")
    with h5py.File(tmp_path / "x.knn.h5") as f:
        assert f.attrs["kind"] == "lookalike.knn" and f.attrs["content_sha256"] == r.content_sha256()
        assert f["id"].dtype == h5py.string_dtype("utf-8") and f["bank_id"].dtype == h5py.string_dtype("utf-8")
        assert json.loads(f.attrs["meta"]) == {"n": 2}
    back = load_knn(tmp_path / "x.knn.h5")
    assert list(back.ids) == ["q1", "q2"] and list(back.bank_ids) == ["b0", "b1", "bé"]
    assert list(back.targets) == ["b0", "b1", "bé"] and back.n_targets == 3
    np.testing.assert_array_equal(back.neighbors, r.neighbors)
    r.save(tmp_path / "x.knn.h5")  # its own file is replaced
    (tmp_path / "other.h5").write_bytes(b"not ours")
    with pytest.raises(Exception, match="exists and was not written by lookalike"):
        r.save(tmp_path / "other.h5")
    assert (tmp_path / "other.h5").read_bytes() == b"not ours"


# ----------------------------------------------------------------------------- refusals, word for word

def _damaged(tmp_path, edit, name="d.knn.h5", sample=False):
    x = _grid(20, 3, 2, 2)
    res = knn_sampled(x, 2, 5) if sample else knn_self(x, 2)
    path = tmp_path / name
    res.save(path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _refusal(path):
    with pytest.raises(InputError) as err:
        load_knn(path)
    return err.value


def _rechecksum(f):
    res = KnnResult(f["id"].asstr()[:], f["neighbors"][:], f["similarity"][:], int(f.attrs["k"]),
                    str(f.attrs["index"]), json.loads(f.attrs["meta"]),
                    f["bank_id"].asstr()[:] if "bank_id" in f else None)
    f.attrs["content_sha256"] = res.content_sha256()


def test_refusals_name_the_file_and_field(tmp_path):
    e = _refusal(tmp_path / "missing.h5")
    assert str(e) == f"{tmp_path / 'missing.h5'}: no such neighbour file" and e.path == tmp_path / "missing.h5"
    (tmp_path / "junk.h5").write_bytes(b"junk")
    e = _refusal(tmp_path / "junk.h5")
    assert e.path == tmp_path / "junk.h5" and str(e).startswith(f"{tmp_path / 'junk.h5'}: not a readable HDF5 file (")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.attrs["kind"] = "something else"
    e = _refusal(tmp_path / "plain.h5")
    assert str(e) == f"{tmp_path / 'plain.h5'}: not a lookalike neighbour file (made by `lookalike knn`)"

    def neighbours_changed(f):
        f["neighbors"][0, 0] = (f["neighbors"][0, 0] + 1) % 20
    e = _refusal(_damaged(tmp_path, neighbours_changed, "c.h5"))
    assert str(e) == (f"{tmp_path / 'c.h5'}: its content does not match the checksum it was written with (changed "
                      "after `lookalike knn` wrote it); re-run `lookalike knn`")

    def out_of_range(value):
        def edit(f):
            f["neighbors"][0, 0] = value
            _rechecksum(f)
        return edit
    for value, name in ((-1, "neg.h5"), (20, "big.h5")):
        e = _refusal(_damaged(tmp_path, out_of_range(value), name))
        assert str(e) == (f"{tmp_path / name}: field 'neighbors': neighbour row {value} is outside 0..19; the file is "
                          "damaged: re-run `lookalike knn`")
        assert e.field == "neighbors" and e.path == tmp_path / name
    assert load_knn(_damaged(tmp_path, out_of_range(19), "edge.h5")).neighbors[0, 0] == 19

    def drop_sample_field(f):
        meta = json.loads(f.attrs["meta"])
        del meta["sample"]["universe_sha256"]
        f.attrs["meta"] = json.dumps(meta)
        _rechecksum(f)
    e = _refusal(_damaged(tmp_path, drop_sample_field, "s.h5", sample=True))
    assert str(e) == (f"{tmp_path / 's.h5'}: field 'meta.sample': a sampled neighbour file without a whole record of "
                      "its draw (['universe_sha256']); re-run `lookalike knn --sample`")

    def wrong_m(f):
        meta = json.loads(f.attrs["meta"])
        meta["sample"]["m"] = 6
        f.attrs["meta"] = json.dumps(meta)
        _rechecksum(f)
    e = _refusal(_damaged(tmp_path, wrong_m, "m.h5", sample=True))
    assert "(m); re-run `lookalike knn --sample`" in str(e) and e.field == "meta.sample"


def test_an_older_file_without_a_checksum_is_read_with_a_warning(tmp_path, caplog):
    def drop(f):
        del f.attrs["content_sha256"]
    path = _damaged(tmp_path, drop, "old.h5")
    with caplog.at_level(logging.WARNING, logger="lookalike.analysis.knn"):
        res = load_knn(path)
    assert res.k == 2
    assert caplog.messages == [f"{path}: made by an older lookalike (no content checksum); re-run `lookalike knn` "
                               "to verify it"]


def test_a_shape_that_does_not_match_the_ids_is_refused(tmp_path):
    def shorter(f):
        data = f["neighbors"][:5]
        del f["neighbors"]
        f.create_dataset("neighbors", data=data)
        _rechecksum(f)
    e = _refusal(_damaged(tmp_path, shorter, "short.h5"))
    assert str(e) == (f"{tmp_path / 'short.h5'}: holds 20 ids but neighbours of shape (5, 2); the file is damaged: "
                      "re-run `lookalike knn`")


def test_search_refusals_word_for_word(tmp_path):
    x = _grid(6, 2, 0, 0) + np.arange(6)[:, None]
    for call in (lambda: knn_self(x, 0), lambda: knn_sampled(x, 0, 2)):
        with pytest.raises(InputError) as err:
            call()
        assert str(err.value).endswith("k must be at least 1 (got 0)")
    with pytest.raises(InputError) as err:
        knn_sampled(x, 0, 2)
    assert err.value.field == "k"
    store = make_store(tmp_path / "s", x)
    for call in (lambda: knn_self(store, 6), lambda: knn_sampled(store, 6, 2)):
        with pytest.raises(InputError) as err:
            call()
        assert err.value.path == tmp_path / "s"
        assert str(err.value).endswith("k=6 needs more than k points; the store has 6")
    with pytest.raises(InputError) as err:
        knn_sampled(store, 6, 2)
    assert err.value.field == "k"
    with pytest.raises(InputError) as err:
        knn_self(x, 2, index="hnsw", ray={})
    assert str(err.value) == "field 'index': kNN on Ray searches exactly (--index flat)"
    with pytest.raises(InputError) as err:
        knn_of_rows(Vectors.of(x), np.array([0]), 2, ray={})
    assert str(err.value) == "field 'backend': kNN on Ray reads the bank from a store's shards; give a store"
    with pytest.raises(InputError) as err:
        sample_rows(6, 6, 0)
    assert str(err.value) == ("field 'sample': --sample 6 must be at least 1 and below the 6 points of the store "
                              "(all 6 points: leave --sample out for the exhaustive search)")


# ----------------------------------------------------------------------------- the caller's choices reach the search

class _Spy:
    def __init__(self, monkeypatch, *names):
        self.calls = []
        for name in names:
            real = getattr(knn_mod, name)
            monkeypatch.setattr(knn_mod, name, self._wrap(name, real))

    def _wrap(self, name, real):
        def spy(*args, **kw):
            self.calls.append((name, args, kw))
            return real(*args, **kw)
        return spy

    def kw(self, name, key):
        return [kw.get(key, "absent") for n, _, kw in self.calls if n == name]


def test_gpu_and_block_choices_reach_every_search(tmp_path, monkeypatch):
    x = _grid(40, 3, 3, 5)
    spy = _Spy(monkeypatch, "knn_self_exact", "knn_self_streamed", "search_blocks", "knn_of_rows", "build_index",
               "knn_search", "knn_self_from_disk")
    want = knn_self(x, 3).neighbors
    spy.calls.clear()
    res = knn_self(x, 3, gpu=False, block_rows=7, bank_rows=9)
    np.testing.assert_array_equal(res.neighbors, want)
    assert spy.kw("knn_self_exact", "gpu") == [False] and spy.kw("knn_self_exact", "block_rows") == [7]
    assert spy.kw("knn_self_exact", "bank_rows") == [9]
    assert set(spy.kw("knn_self_streamed", "gpu")) == {False} and set(spy.kw("knn_self_streamed", "bank_rows")) == {9}
    assert set(spy.kw("knn_self_streamed", "block_rows")) == {7}
    assert spy.kw("knn_self_streamed", "exclude_self") == [False]  # copies: the distinct rows searched once
    spy.calls.clear()
    store = make_store(tmp_path / "s", x)
    res = knn_sampled(store, 3, 6, gpu=False, block_rows=5, bank_rows=11)
    assert spy.kw("knn_of_rows", "gpu") == [False] and spy.kw("knn_of_rows", "block_rows") == [5]
    assert spy.kw("knn_of_rows", "bank_rows") == [11] and spy.kw("knn_of_rows", "ray") == [None]
    assert spy.kw("search_blocks", "gpu") == [False] and spy.kw("search_blocks", "block_rows") == [5]
    np.testing.assert_array_equal(res.neighbors, _brute(x, 3, sample_rows(40, 6, 0))[1])
    spy.calls.clear()
    res = knn_self(store, 3, gpu=False, block_rows=5, bank_rows=11, in_memory_bytes=0)
    np.testing.assert_array_equal(res.neighbors, want)
    assert spy.kw("knn_self_from_disk", "gpu") == [False] and spy.kw("knn_self_from_disk", "bank_rows") == [11]
    assert spy.kw("knn_self_from_disk", "block_rows") == [5] and spy.kw("knn_self_from_disk", "ray") == [None]
    assert set(spy.kw("knn_of_rows", "block_rows")) == {5} and set(spy.kw("knn_of_rows", "gpu")) == {False}
    assert set(spy.kw("knn_of_rows", "bank_rows")) == {11}


def test_the_in_memory_budget_decides_the_search(tmp_path, monkeypatch):
    x = _grid(24, 3, 4, 3)
    store = make_store(tmp_path / "s", x)
    spy = _Spy(monkeypatch, "knn_self_from_disk", "knn_self_exact")
    size = 24 * 3 * 4
    knn_self(store, 2, in_memory_bytes=size)  # fits exactly: in memory
    assert [c[0] for c in spy.calls] == ["knn_self_exact"]
    spy.calls.clear()
    steps = []
    res = knn_self(store, 2, in_memory_bytes=size - 1, progress=steps.append)
    assert [c[0] for c in spy.calls] == ["knn_self_from_disk"]
    np.testing.assert_array_equal(res.neighbors, _brute(x, 2)[1])
    assert sum(steps) == 24 and all(s > 0 for s in steps)
    spy.calls.clear()
    steps.clear()
    knn_self_from_disk(Vectors.of(store), 2, query_rows=10, progress=steps.append)
    assert steps == [10, 10, 4]
    monkeypatch.setattr(knn_mod, "IN_MEMORY_BYTES", size - 1)
    knn_self(store, 2)  # the module's budget when none is given
    assert [c[0] for c in spy.calls] == ["knn_self_from_disk"]


def test_an_approximate_index_reports_its_recall(caplog, monkeypatch):
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    spy = _Spy(monkeypatch, "knn_search", "build_index")
    with caplog.at_level(logging.INFO, logger="lookalike.analysis.knn"):
        res = knn_self(x, 5, index="hnsw", gpu=False, recall_sample=50, seed=3)
    assert res.meta["recall_sample"] == 50 and 0.5 < res.meta["recall_at_k"] <= 1.0
    assert res.meta["gpu"] is False and res.index == "hnsw"
    assert caplog.messages[-1] == f"hnsw index recall@5 on 50 sampled queries: {res.meta['recall_at_k']:.4f}"
    (_, bargs, bkw), = [c for c in spy.calls if c[0] == "build_index"]
    assert bargs[1] == "hnsw" and bkw["gpu"] is False and bkw["seed"] == 3
    checks = [c for c in spy.calls if c[0] == "knn_search"]
    full, exact = checks
    assert full[2]["index"] is not None and full[2]["exclude_rows"].tolist() == list(range(300))
    sample = exact[2]["exclude_rows"]
    assert len(set(sample.tolist())) == 50 and (np.diff(sample) > 0).all() and exact[2]["gpu"] is False
    np.testing.assert_array_equal(sample, np.sort(np.random.default_rng(3).choice(300, 50, replace=False)))
    want = _brute(x, 5, sample)[1]
    hits = [len(set(a) & set(b)) for a, b in zip(res.neighbors[sample], want)]
    assert res.meta["recall_at_k"] == pytest.approx(np.mean(hits) / 5)
    res = knn_self(x, 5, index="hnsw", recall_sample=5000)
    assert res.meta["recall_sample"] == 300


def test_an_earlier_lookalike_file_is_replaced_a_user_file_is_not(tmp_path):
    """A neighbour file written before ledgers existed identifies itself (kind) and is replaced, at the name's
    claim and again when the new file takes its place."""
    with h5py.File(tmp_path / "old.knn.h5", "w") as f:
        f.attrs["kind"] = "lookalike.knn"
    r = knn_self(_grid(12, 2, 0, 0) + np.arange(12)[:, None], 2)
    r.save(tmp_path / "old.knn.h5")
    assert load_knn(tmp_path / "old.knn.h5").content_sha256() == r.content_sha256()
    with h5py.File(tmp_path / "user.h5", "w") as f:
        f.attrs["kind"] = "something of the user's"
    with pytest.raises(Exception, match="was not written by lookalike"):
        r.save(tmp_path / "user.h5")
    (tmp_path / "dir.h5").mkdir()
    with pytest.raises(Exception) as err:
        r.save(tmp_path / "dir.h5")
    assert str(err.value).endswith("is a folder; give a file name for the neighbour file")


def test_the_ray_search_gets_the_store_and_the_drawn_rows(tmp_path, monkeypatch):
    import lookalike.analysis.distributed as dist
    from lookalike.analysis.search import _bank_chunks, search_blocks

    x = _grid(50, 3, 6, 6)
    store = make_store(tmp_path / "s", x)
    calls = []

    moved = []

    def fake_ray_top_k(st_, q, rows, k, *, bank_rows, progress, **ray):
        moved.append(progress is not None)
        calls.append((st_.path, q.shape, rows.tolist(), k, bank_rows, ray))
        return search_blocks(_bank_chunks(Vectors.of(st_).blocks(bank_rows), k + 1), q, k, query_rows=rows)

    monkeypatch.setattr(dist, "ray_top_k", fake_ray_top_k)
    res = knn_sampled(store, 4, 9, bank_rows=13, ray={"workers": 2}, progress=lambda n: None)
    rows = sample_rows(50, 9, 0)
    assert calls == [(tmp_path / "s", (9, 3), rows.tolist(), 4, 13, {"workers": 2})]
    assert moved == [True]  # a sampled search's bar moves on Ray too
    np.testing.assert_array_equal(res.neighbors, _brute(x, 4, rows)[1])
    calls.clear()
    full = knn_self(store, 4, bank_rows=13, ray={"workers": 2}, progress=lambda n: None)  # from disk on Ray
    assert len(calls) == 1 and calls[0][2] == list(range(50))
    np.testing.assert_array_equal(full.neighbors, _brute(x, 4)[1])


def test_every_search_reports_its_progress(tmp_path):
    """Long searches move a bar: the bank rows searched add up to the bank, whichever path runs."""
    x = _grid(90, 3, 7, 9)
    store = make_store(tmp_path / "s", x, shard_rows=20)
    for run in (lambda p: knn_sampled(store, 3, 7, bank_rows=25, progress=p),
                lambda p: knn_self(store, 3, bank_rows=25, progress=p),
                lambda p: knn_self(x + np.arange(90)[:, None], 3, bank_rows=25, progress=p)):
        steps = []
        run(steps.append)
        assert sum(steps) == 90 and len(steps) > 1 and all(s > 0 for s in steps)
    steps = []  # from disk: a step per block of query points
    knn_self_from_disk(Vectors.of(store), 3, bank_rows=25, query_rows=40, progress=steps.append)
    assert steps == [40, 40, 10]
    from lookalike.analysis.ood import deep_knn_ood

    steps = []
    deep_knn_ood(store, x[:10] + 1, 2, bank_rows=25, progress=steps.append)
    assert sum(steps) == 90 - 9 and len(steps) > 1  # the bank without its held-out tenth


@pytest.mark.parametrize("precision", ["binary", "ubinary", "float16"])
def test_a_sampled_search_works_on_every_precision(tmp_path, precision):
    """Binary stores are searched exactly by Hamming distance (the cosine of their ±1 vectors, 1 - 2h/d), ties by
    row, and a drawn point's neighbours are the exhaustive search's; float16 stores likewise by cosine."""
    rng = np.random.default_rng(8)
    if precision == "float16":
        x = rng.normal(size=(70, 6)).astype(np.float16)
        vectors = x.astype(np.float32)
    else:
        bits = rng.integers(0, 2, size=(70, 16)).astype(np.uint8)
        bits[10] = bits[3]  # a copy: a tie broken by row
        packed = np.packbits(bits, axis=1)
        x = (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
        vectors = bits.astype(np.float32) * 2 - 1
    store = make_store(tmp_path / "s", x, precision=precision, **({"bits": 16} if precision != "float16" else {}))
    full = knn_self(store, 5)
    drawn = knn_sampled(store, 5, 9, seed=2)
    rows = sample_rows(70, 9, 2)
    np.testing.assert_array_equal(drawn.neighbors, full.neighbors[rows])
    np.testing.assert_array_equal(full.neighbors, _brute(vectors, 5)[1])
    if precision != "float16":
        assert drawn.meta["metric"] == "hamming (as the cosine of the ±1 vectors: 1 - 2h/d)"
        h = (bits[rows][:, None, :] != bits[None, :, :]).sum(2)
        np.testing.assert_allclose(drawn.similarity, 1 - 2 * np.take_along_axis(h, drawn.neighbors, 1) / 16,
                                   atol=1e-6)


def test_calls_with_the_defaults_use_the_documented_values():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(10_005, 2)).astype(np.float32)
    assert knn_self(x[:50]).k == 10
    drawn = knn_sampled(x)  # k=10, m=10000, seed 0
    assert (drawn.k, drawn.sample["m"], drawn.sample["seed"]) == (10, 10_000, 0)
    np.testing.assert_array_equal(drawn.ids.astype(int), sample_rows(10_005, 10_000, 0))
    approx = knn_self(x[:1500], 5, index="hnsw")
    assert approx.meta["recall_sample"] == 1000


def test_the_meta_records_the_gpu_choice_actually_used(monkeypatch):
    monkeypatch.setattr(knn_mod, "use_gpu", lambda gpu: gpu is not False)  # as on a machine with a GPU
    x = np.random.default_rng(10).normal(size=(60, 4)).astype(np.float32)
    assert knn_self(x, 3).meta["gpu"] is True and knn_self(x, 3, gpu=False).meta["gpu"] is False
    assert knn_self(x, 3, index="hnsw", gpu=True).meta["gpu"] is False  # HNSW is CPU only in FAISS
    assert knn_sampled(x, 3, 5, gpu=False).meta["gpu"] is False and knn_sampled(x, 3, 5).meta["gpu"] is True


def test_distinct_vectors_and_few_distinct_vectors_take_their_own_paths(monkeypatch):
    spy = _Spy(monkeypatch, "knn_self_streamed", "_all_pairs")
    x = np.random.default_rng(11).normal(size=(40, 4)).astype(np.float32)
    steps = []
    res = knn_self(x, 3, gpu=False, block_rows=7, bank_rows=11, progress=steps.append)
    assert sum(steps) == 40 and len(steps) > 1
    np.testing.assert_array_equal(res.neighbors, _brute(x, 3)[1])
    assert spy.kw("knn_self_streamed", "gpu") == [False] and spy.kw("knn_self_streamed", "block_rows") == [7]
    assert spy.kw("knn_self_streamed", "bank_rows") == [11]
    spy.calls.clear()
    few = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)  # 30 rows, 3 distinct: every pair searched at once
    steps = []
    res = knn_self(few, 4, progress=steps.append)
    assert [c[0] for c in spy.calls] == ["_all_pairs"] and sum(steps) == 30
    np.testing.assert_array_equal(res.neighbors, _brute(few, 4)[1])


def test_the_from_disk_search_never_holds_the_store_and_gives_int64_rows(tmp_path, monkeypatch):
    x = _grid(30, 3, 12, 4)
    store = make_store(tmp_path / "s", x)

    def refuse(self, *a, **kw):
        raise AssertionError("the whole store was loaded")

    monkeypatch.setattr(Vectors, "normalized", refuse)
    res = knn_self(store, 3, in_memory_bytes=0)
    assert res.neighbors.dtype == np.int64 and res.similarity.dtype == np.float32
    np.testing.assert_array_equal(res.neighbors, _brute(x, 3)[1])


def test_index_settings_reach_the_index(monkeypatch):
    spy = _Spy(monkeypatch, "build_index")
    x = np.random.default_rng(13).normal(size=(200, 4)).astype(np.float32)
    knn_self(x, 3, index="hnsw", ef_search=64, hnsw_m=8)
    (_, _, kw), = spy.calls
    assert kw["ef_search"] == 64 and kw["hnsw_m"] == 8


def test_the_checksum_does_not_depend_on_the_arrays_dtypes():
    r = KnnResult(np.array(["a", "b"]), np.array([[1], [0]], np.int64), np.array([[0.5], [0.25]], np.float32), 1)
    narrow = KnnResult(r.ids, r.neighbors.astype(np.int32), r.similarity.astype(np.float64), 1)
    assert narrow.content_sha256() == r.content_sha256()


def test_a_neighbour_file_missing_a_dataset_is_refused(tmp_path):
    def drop(f):
        del f["similarity"]
    e = _refusal(_damaged(tmp_path, drop, "nosim.h5"))
    assert str(e).startswith(f"{tmp_path / 'nosim.h5'}: not a complete lookalike neighbour file (")
    assert str(e).endswith("); re-run `lookalike knn`") and e.path == tmp_path / "nosim.h5"


def test_sampled_seconds_are_the_elapsed_time(tmp_path):
    res = knn_sampled(_grid(40, 3, 1, 0) + np.arange(40)[:, None], 3, 5)
    assert 0 <= res.meta["seconds"] < 60
