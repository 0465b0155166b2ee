"""Deep-kNN OOD's contract against its definition: scores, thresholds and metrics against a brute-force numpy
reference (exact copies put points on the thresholds, so >= against > shows), the bank streamed without its
held-out rows, what a file records and every refusal word for word, and the caller's choices reaching the search."""

from __future__ import annotations

import inspect
import json
import logging
import math

import numpy as np
import pytest

from lookalike.analysis import ood as ood_mod
from lookalike.analysis.ood import (OodResult, _bank_blocks, _rankdata, auroc, deep_knn_ood, kth_distance_scores,
                                    kth_distance_scores_streamed, load_ood, meaningful, threshold_at_tpr)
from lookalike.analysis.vectors import Vectors
from lookalike.errors import InputError
from support import make_store


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _kth(bank, q, k):
    d = np.sqrt(np.clip(2 - 2 * (_unit(q).astype(np.float64) @ _unit(bank).astype(np.float64).T), 0, None))
    return -np.sort(d, axis=1)[:, k - 1]


def _threshold(s, tpr):
    return float(np.sort(s)[::-1][max(1, math.ceil(tpr * len(s) - 1e-9)) - 1])


def _reference(train, test, ks, tpr=0.95, val=None, in_test=None, fraction=0.1, seed=0):
    if val is None:
        perm = np.random.default_rng(seed).permutation(len(train))
        drop = np.sort(perm[:max(1, int(round(fraction * len(train))))])
        val, bank = train[drop], np.delete(train, drop, axis=0)
    else:
        bank = train
    out = {}
    for k in ks:
        v, t = _kth(bank, val, k), _kth(bank, test, k)
        lam = _threshold(v, tpr)
        m = {"val_tpr": float((v >= lam).mean())}
        if in_test is not None:
            i = _kth(bank, in_test, k)
            lam_i = _threshold(i, tpr)
            pairs = (i[:, None] > t[None, :]).mean() + 0.5 * (i[:, None] == t[None, :]).mean()
            m.update(auroc=float(pairs), fpr_at_tpr=float((t >= lam_i).mean()),
                     in_test_tpr_at_val_threshold=float((i >= lam).mean()))
        out[k] = (t, lam, m)
    return out


def _data(seed=0):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(80, 6)).astype(np.float32)
    val = rng.normal(size=(20, 6)).astype(np.float32)
    in_test = np.concatenate([rng.normal(size=(14, 6)), val]).astype(np.float32)  # copies: on val's scores
    test = np.concatenate([rng.normal(size=(12, 6)) + 2, in_test[:3]]).astype(np.float32)  # and on in-test's
    val[-3:] = val[0]  # ties at the threshold's place
    return train, test, val, in_test


@pytest.mark.parametrize("bank_rows", [7, 65536])
@pytest.mark.parametrize("with_val", [True, False])
def test_scores_thresholds_and_metrics_are_the_definition(bank_rows, with_val):
    train, test, val, in_test = _data()
    res = deep_knn_ood(train, test, [1, 3, 5], val=val if with_val else None, in_test=in_test, bank_rows=bank_rows,
                       tpr=0.8)
    want = _reference(train, test, [1, 3, 5], 0.8, val if with_val else None, in_test)
    for k in (1, 3, 5):
        t, lam, m = want[k]
        np.testing.assert_allclose(res.scores[k], t, atol=2e-6)
        assert res.thresholds[k] == pytest.approx(lam, abs=2e-6)
        assert res.metrics[k]["val_tpr"] == m["val_tpr"]
        assert res.metrics[k]["fpr_at_tpr"] == m["fpr_at_tpr"]
        assert res.metrics[k]["in_test_tpr_at_val_threshold"] == m["in_test_tpr_at_val_threshold"]
        assert res.metrics[k]["auroc"] == pytest.approx(m["auroc"], abs=1e-12)
    assert res.ks == [1, 3, 5] and res.tpr == 0.8 and list(res.test_ids) == [str(i) for i in range(15)]
    assert deep_knn_ood(train, test).ks == [10]  # the paper's k by default


def test_the_held_out_split_is_the_documented_draw():
    train, test, _, _ = _data(1)
    res = deep_knn_ood(train, test, 2, val_fraction=0.01, seed=4)
    assert res.meta["val"] == "held-out 1 of 80 train points (fraction 0.01, seed 4); bank is the other 79"
    assert res.meta["n_bank"] == 79 and res.meta["n_val"] == 1 and res.meta["n_test"] == 15
    want = _reference(train, test, [2], val=None, fraction=0.01, seed=4)
    np.testing.assert_allclose(res.scores[2], want[2][0], atol=2e-6)
    res = deep_knn_ood(train, test, 2)  # the defaults: 10% held out with seed 0
    assert res.meta["val"] == "held-out 8 of 80 train points (fraction 0.1, seed 0); bank is the other 72"
    np.testing.assert_allclose(res.scores[2], _reference(train, test, [2])[2][0], atol=2e-6)


def test_defaults_are_the_documented_ones():
    p = inspect.signature(deep_knn_ood).parameters
    assert {k: p[k].default for k in ("ks", "tpr", "val_fraction", "seed", "allow_overlap", "bank_rows")} == \
        {"ks": 10, "tpr": 0.95, "val_fraction": 0.1, "seed": 0, "allow_overlap": False, "bank_rows": 65536}


def test_scores_of_points_beyond_the_unit_sphere_are_clipped_not_nan():
    bank = _unit(np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32))
    q = bank[:2] * 1.001  # a similarity above 1 by rounding: distance 0, not sqrt of a negative
    for scores in (kth_distance_scores(bank, q, [1, 2]), kth_distance_scores_streamed([(0, bank)], q, [1, 2])):
        assert scores[1].tolist() == [0.0, 0.0] and not np.isnan(scores[2]).any()
        assert scores[1].dtype == np.float64
    np.testing.assert_allclose(kth_distance_scores(bank, bank[5:], [3])[3], _kth(bank, bank[5:], 3), atol=2e-6)


def test_scores_ask_only_for_similarities(monkeypatch):
    seen = []
    import lookalike.analysis.search as search_mod

    real_search, real_blocks = search_mod.knn_search, search_mod.search_blocks

    def knn_search(*a, **kw):
        seen.append(("knn_search", kw.get("exact_rows"), kw.get("index") is not None))
        return real_search(*a, **kw)

    def search_blocks(*a, **kw):
        seen.append(("search_blocks", kw.get("exact_rows"), kw.get("gpu")))
        return real_blocks(*a, **kw)

    monkeypatch.setattr(ood_mod, "knn_search", knn_search)
    monkeypatch.setattr(search_mod, "search_blocks", search_blocks)
    bank = _unit(np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32))
    built = ood_mod.build_index(bank, "flat", gpu=False)
    a = kth_distance_scores(bank, bank[:3], [2], index=built)
    b = kth_distance_scores(bank, bank[:3], [2], gpu=False)
    c = kth_distance_scores_streamed([(0, bank)], bank[:3], [2], gpu=False)
    assert seen == [("knn_search", False, True), ("knn_search", False, True), ("search_blocks", False, False)]
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_allclose(a[2], c[2], atol=1e-7)


def test_the_bank_streams_without_the_held_out_rows():
    x = np.arange(40, dtype=np.float32).reshape(10, 4) + 1
    blocks = list(_bank_blocks(Vectors.of(x), np.array([0, 3, 9]), 4))
    assert [lo for lo, _ in blocks] == [0, 2, 6]
    got = np.concatenate([b for _, b in blocks])
    np.testing.assert_allclose(got, _unit(np.delete(x, [0, 3, 9], axis=0)), rtol=1e-6)
    assert [lo for lo, _ in _bank_blocks(Vectors.of(x), None, 4)] == [0, 4, 8]
    assert [lo for lo, _ in _bank_blocks(Vectors.of(x), np.array([0, 1, 2, 3]), 4)] == [0, 4]


def test_ranks_average_ties_and_auroc_counts_them_half():
    a = np.array([3.0, 1.0, 3.0, 2.0, 1.0, 3.0])
    assert _rankdata(a).tolist() == [5.0, 1.5, 5.0, 3.0, 1.5, 5.0]
    assert auroc(np.array([1.0, 2.0]), np.array([1.0, 0.0])) == 0.875


def test_threshold_rule_and_its_refusals():
    assert threshold_at_tpr([0.1, 0.5, 0.3, 0.9], 0.5) == 0.5
    assert threshold_at_tpr([0.1, 0.5, 0.3, 0.9], 1.0) == 0.1
    assert threshold_at_tpr(np.array([1, 2, 3]), 0.01) == 3.0  # at least one point is kept
    for bad in (0, -0.5, 1.5):
        with pytest.raises(InputError) as err:
            threshold_at_tpr([1.0], bad)
        assert str(err.value) == f"tpr must be in (0, 1] (got {bad})"


def _result(scores, threshold, metrics=None):
    return OodResult(np.array([f"t{i}" for i in range(len(scores))], dtype=object), [5], 0.95,
                     {5: np.array(scores, float)}, {5: threshold}, {5: metrics or {}}, {"m": 1})


def test_a_point_on_the_threshold_is_in_distribution():
    r = _result([-1.0, -0.5, -0.25], -0.5)
    assert r.ood_mask(5).tolist() == [True, False, False] and r.ood_ids(5) == {"t0"}


def test_meaningful_verdicts_word_for_word():
    ok = meaningful(_result([-1.0] + [0.0] * 19, -0.5, {"auroc": 0.9}), 5)  # exactly 5%, exactly 0.9: both pass
    assert ok == {"n_ood": 1, "n_test": 20, "fraction": 0.05, "auroc": 0.9, "ok": True, "reason": "ok"}
    bad = meaningful(_result([0.0] * 20, -0.5, {"auroc": 0.8999}), 5)
    assert bad == {"n_ood": 0, "n_test": 20, "fraction": 0.0, "auroc": 0.8999, "ok": False,
                   "reason": "flags 0.0% of the challenge set (< 5%); AUROC 0.900 < 0.9"}
    none = meaningful(OodResult(np.array([], dtype=object), [5], 0.95, {5: np.array([])}, {5: 0.0}, {}), 5)
    assert none == {"n_ood": 0, "n_test": 0, "fraction": 0.0, "auroc": None, "ok": False,
                    "reason": "flags 0.0% of the challenge set (< 5%); no AUROC (give held-out in-distribution "
                              "points)"}


def test_a_file_round_trips_and_records_the_method(tmp_path):
    r = _result([-1.123456789, -0.5, 0.0], -0.5, {"auroc": 0.75})
    r.save(tmp_path / "o.json")
    obj = json.loads((tmp_path / "o.json").read_text())
    assert obj["method"] == "deep-knn (Sun et al. 2022)" and obj["kind"] == "lookalike.ood"
    assert obj["results"]["5"] == {"threshold": -0.5, "n_ood": 1, "metrics": {"auroc": 0.75},
                                   "score": [-1.1234568, -0.5, 0.0], "ood": [True, False, False]}
    back = load_ood(tmp_path / "o.json")
    assert back.metrics == {5: {"auroc": 0.75}} and back.meta == {"m": 1} and back.test_ids.dtype == object
    empty = OodResult(r.test_ids, [5], 0.95, r.scores, r.thresholds, {}, {})
    empty.save(tmp_path / "e.json")
    assert json.loads((tmp_path / "e.json").read_text())["results"]["5"]["metrics"] == {}
    # a file an earlier lookalike wrote (no ledger entry) is replaced; a user's file is not
    (tmp_path / "legacy.json").write_text(json.dumps({"kind": "lookalike.ood"}))
    r.save(tmp_path / "legacy.json")
    assert load_ood(tmp_path / "legacy.json").ks == [5]
    for mine in ("{}", "not json at all"):  # a user's JSON, or not JSON: never taken for an earlier OOD file
        (tmp_path / "mine.json").write_text(mine)
        with pytest.raises(Exception, match="was not written by lookalike"):
            r.save(tmp_path / "mine.json")
        assert (tmp_path / "mine.json").read_text() == mine
    (tmp_path / "folder").mkdir()
    with pytest.raises(Exception) as err:
        r.save(tmp_path / "folder")
    assert str(err.value).endswith("is a folder; give a file name for the OOD file")


def test_load_refusals_word_for_word(tmp_path, caplog):
    with pytest.raises(InputError) as err:
        load_ood(tmp_path / "none.json")
    assert str(err.value) == f"{tmp_path / 'none.json'}: no such OOD file"
    (tmp_path / "other.json").write_text('{"kind": "x"}')
    with pytest.raises(InputError) as err:
        load_ood(tmp_path / "other.json")
    assert str(err.value) == f"{tmp_path / 'other.json'}: not a lookalike OOD file (made by `lookalike ood`)"
    r = _result([-1.0, -0.5, 0.0], -0.5)
    r.save(tmp_path / "o.json")
    obj = json.loads((tmp_path / "o.json").read_text())
    obj["results"]["5"]["threshold"] = -0.75
    (tmp_path / "changed.json").write_text(json.dumps(obj))
    with pytest.raises(InputError) as err:
        load_ood(tmp_path / "changed.json")
    assert str(err.value) == (f"{tmp_path / 'changed.json'}: its content does not match the checksum it was written "
                              "with (changed after `lookalike ood` wrote it); re-run `lookalike ood`")
    del obj["content_sha256"]
    obj["results"]["5"]["score"] = [1.0]
    (tmp_path / "short.json").write_text(json.dumps(obj))
    with caplog.at_level(logging.WARNING, logger="lookalike.analysis.ood"):
        with pytest.raises(InputError) as err:
            load_ood(tmp_path / "short.json")
    assert str(err.value) == (f"{tmp_path / 'short.json'}: not a complete lookalike OOD file (k=5 has 1 scores for 3 "
                              "test ids); re-run `lookalike ood`")
    assert caplog.messages == [f"{tmp_path / 'short.json'}: made by an older lookalike (no content checksum); re-run "
                               "`lookalike ood` to verify it"]
    older = {k: v for k, v in json.loads((tmp_path / "o.json").read_text()).items()
             if k not in ("content_sha256", "meta")}
    del older["results"]["5"]["metrics"]
    (tmp_path / "older.json").write_text(json.dumps(older))
    back = load_ood(tmp_path / "older.json")
    assert back.metrics == {5: {}} and back.meta == {}


# ----------------------------------------------------------------------------- stores: meta, overlap, refusals

CONFIG = {"corpus_fingerprint": "fp-bank", "format": "jsonl", "text_field": "text"}


def test_meta_of_a_store_run(tmp_path):
    train, test, val, _ = _data(2)
    bank = make_store(tmp_path / "bank", train, **CONFIG)
    t = make_store(tmp_path / "test", test, ids=[f"t{i}" for i in range(len(test))], corpus_fingerprint="fp-test",
                   format="tsv")
    v = make_store(tmp_path / "val", val, ids=[f"v{i}" for i in range(len(val))], corpus_fingerprint="fp-val",
                   split="validation")
    res = deep_knn_ood(bank, t, 3, val=v)
    assert res.meta == {
        "train": str(tmp_path / "bank"), "test": str(tmp_path / "test"),
        "distance": "euclidean on L2-normalised features", "score": "-distance to the k-th neighbour",
        "threshold_rule": "largest lambda with #{val >= lambda} >= ceil(tpr * n_val)", "tpr": 0.95,
        "precision": "float32", "model_sha256": "m" * 64, "pooling": "cls", "normalize": False, "max_length": 16,
        "train_fingerprint": "fp-bank", "train_selection": CONFIG,
        "test_fingerprint": "fp-test", "test_selection": {"corpus_fingerprint": "fp-test", "format": "tsv"},
        "val_selection": {"corpus_fingerprint": "fp-val", "split": "validation"}, "val": str(tmp_path / "val"),
        "n_bank": 80, "n_val": 20, "n_test": 15}
    assert list(res.test_ids) == [f"t{i}" for i in range(15)]


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_a_binary_bank_says_its_distance(tmp_path, precision):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 256, size=(40, 2)).astype(np.uint8)
    if precision == "binary":
        bits = (bits.astype(np.int16) - 128).astype(np.int8)
    bank = make_store(tmp_path / "bank", bits[:30], precision=precision)
    test = make_store(tmp_path / "test", bits[30:], ids=[f"t{i}" for i in range(10)], precision=precision)
    res = deep_knn_ood(bank, test, 2)
    assert res.meta["distance"] == "euclidean on the L2-normalised ±1 vectors of the bits: 2*sqrt(hamming/d)"
    assert res.meta["precision"] == precision


def test_overlap_with_the_bank_is_refused_or_recorded(tmp_path):
    train, test, _, _ = _data(3)
    bank = make_store(tmp_path / "bank", train, **CONFIG)
    same = make_store(tmp_path / "copy", train, **CONFIG)  # the same content elsewhere
    with pytest.raises(InputError) as err:
        deep_knn_ood(bank, same, 2)
    assert str(err.value) == (f"{tmp_path / 'copy'}: the test store holds 80 of the bank's points (e.g. id 'p0'); "
                              "deep-kNN needs held-out points (a bank point is its own nearest neighbour). Use a "
                              "held-out store, or pass --allow-overlap to accept it (recorded)")
    shared_ids = [f"p{i}" if i in (7, 3) else f"q{i}" for i in range(15)]
    part = make_store(tmp_path / "part", test, ids=shared_ids, **CONFIG)  # same corpus, two ids in common
    with pytest.raises(InputError) as err:
        deep_knn_ood(bank, part, 2)
    assert "the test store holds 2 of the bank's points (e.g. id 'p3')" in str(err.value)
    assert err.value.path == tmp_path / "part"
    res = deep_knn_ood(bank, part, 2, allow_overlap=True)
    assert res.meta["bank_overlap"] == {"test": 2}
    other = make_store(tmp_path / "other", test, ids=shared_ids, corpus_fingerprint="another corpus")
    assert "bank_overlap" not in deep_knn_ood(bank, other, 2).meta  # another corpus: same ids, other points
    v = make_store(tmp_path / "val", train[:5], ids=["p1", "p2", "p3", "p4", "p5"], **CONFIG)
    with pytest.raises(InputError) as err:
        deep_knn_ood(bank, other, 2, val=v)
    assert "the val store holds 5 of the bank's points (e.g. id 'p1')" in str(err.value)
    res = deep_knn_ood(bank, other, 2, val=v, allow_overlap=True)
    assert res.meta["bank_overlap"] == {"val": 5}
    with pytest.raises(InputError, match="the in-test store holds 80"):
        deep_knn_ood(bank, other, 2, in_test=bank)
    assert deep_knn_ood(bank, other, 2, in_test=bank, allow_overlap=True).meta["bank_overlap"] == {"in-test": 80}


def test_refusals_word_for_word(tmp_path):
    train, test, _, _ = _data(4)
    for ks in (0, [], [2, 0]):
        with pytest.raises(InputError) as err:
            deep_knn_ood(train, test, ks)
        assert str(err.value) == "k must be at least 1"
    with pytest.raises(InputError) as err:
        deep_knn_ood(train, test[:, :4], 2)
    assert str(err.value) == ("stores of different dimensions [4, 6]: train, test and val must come from the same "
                              "model")
    assert deep_knn_ood(train[:10], test, 8).meta["n_bank"] == 9  # k = bank size - 1 is fine
    assert deep_knn_ood(train[:10], test, 9).meta["n_bank"] == 9  # and k = bank size
    with pytest.raises(InputError) as err:
        deep_knn_ood(train[:10], test, 10)
    assert str(err.value) == "the training bank has 9 points, fewer than k=10"
    with pytest.raises(InputError) as err:
        deep_knn_ood(train, test, 2, ray={})
    assert str(err.value) == "field 'backend': OOD on Ray reads the bank from a store's shards; give a store"
    bank = make_store(tmp_path / "bank", train)
    other_model = make_store(tmp_path / "t", test, ids=[f"t{i}" for i in range(15)], model_sha256="x" * 64)
    with pytest.raises(Exception) as err:
        deep_knn_ood(bank, other_model, 2)
    assert str(err.value).startswith("deep-kNN OOD: the test store")


def test_the_ray_search_gets_the_store_the_points_and_the_held_out_rows(tmp_path, monkeypatch):
    import lookalike.analysis.distributed as dist
    from lookalike.analysis.search import _bank_chunks, search_blocks

    train, test, _, in_test = _data(5)
    bank = make_store(tmp_path / "bank", train)
    calls = []

    def fake_ray_top_k(store, q, rows, k, *, bank_rows, exact_rows, drop, progress, **ray):
        assert progress is not None  # the bar moves on Ray too
        calls.append((store.path, len(q), rows, k, bank_rows, exact_rows, None if drop is None else drop.tolist(),
                      ray))
        return search_blocks(_bank_chunks(_bank_blocks(Vectors.of(store), drop, bank_rows), k), q, k,
                             exact_rows=False)

    monkeypatch.setattr(dist, "ray_top_k", fake_ray_top_k)
    res = deep_knn_ood(bank, test, [2, 4], in_test=in_test, bank_rows=9, ray={"workers": 2}, progress=lambda n: None)
    local = deep_knn_ood(bank, test, [2, 4], in_test=in_test, bank_rows=9)
    (path, nq, rows, k, bank_rows, exact_rows, drop, ray), = calls
    perm = np.random.default_rng(0).permutation(80)
    assert (path, nq, rows, k, bank_rows, exact_rows, ray) == (tmp_path / "bank", 8 + 15 + len(in_test), None, 4, 9, False,
                                                              {"workers": 2})
    assert drop == sorted(perm[:8].tolist())
    for k in (2, 4):
        np.testing.assert_allclose(res.scores[k], local.scores[k], atol=1e-7)
        assert res.metrics[k] == local.metrics[k]


def test_the_gpu_choice_reaches_the_search(monkeypatch):
    seen = []
    real = ood_mod.kth_distance_scores_streamed

    def spy(*a, **kw):
        seen.append((kw.get("gpu"), kw.get("ray_search")))
        return real(*a, **kw)

    monkeypatch.setattr(ood_mod, "kth_distance_scores_streamed", spy)
    train, test, _, _ = _data(6)
    deep_knn_ood(train, test, 2, gpu=False)
    assert seen == [(False, None)]


def test_one_shared_id_is_overlap(tmp_path):
    from lookalike.analysis.ood import _shared_ids

    train, test, _, _ = _data(7)
    bank = make_store(tmp_path / "bank", train, **CONFIG)
    one = make_store(tmp_path / "one", test, ids=["p5"] + [f"q{i}" for i in range(14)], **CONFIG)
    assert _shared_ids(one, bank) == ["p5"]
    with pytest.raises(InputError, match="holds 1 of the bank's points .e.g. id 'p5'"):
        deep_knn_ood(bank, one, 2)
