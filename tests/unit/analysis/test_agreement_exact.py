"""analysis/agreement.py, exactly: every returned field and every refusal's wording and field, against hand-made
cases (mutation testing found the unit tier reached these lines without checking what they said): the bank-id
translation of query-against-bank files, one-sided error universes, equal sets, sampled pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lookalike.analysis.agreement import (
    distribution_agreement,
    error_agreement,
    knn_jaccards,
    representation_agreement,
    same_setup,
    same_universe,
)
from lookalike.analysis.knn import KnnResult, knn_sampled, knn_self
from lookalike.analysis.ood import OodResult
from lookalike.analysis.scoring import ErrorSet
from lookalike.errors import InputError

IDS = np.array(["p", "q", "r", "s", "t"], dtype=object)


def _knn(neighbors, ids=IDS, k=2, **kw):
    return KnnResult(np.asarray(ids, dtype=object), np.asarray(neighbors), np.ones((len(ids), k)), k, **kw)


def test_representation_agreement_returns_exactly_its_fields():
    a = _knn([[1, 2], [0, 2], [0, 1], [4, 0], [3, 0]])
    b = _knn([[1, 3], [0, 2], [0, 1], [4, 0], [3, 1]])
    per = np.array([1 / 3, 1, 1, 1, 1 / 3])
    got = representation_agreement(a, b, 2)
    assert set(got) == {"mean", "variance", "n", "k", "basis"}
    assert got["mean"] == pytest.approx(per.mean()) and got["variance"] == pytest.approx(per.var())
    assert (got["n"], got["k"], got["basis"]) == (5, 2, "exhaustive: all 5 points")
    assert knn_jaccards(a, b, 2).dtype == np.float64


@pytest.mark.parametrize("ka, kb", [(1, 3), (3, 1)])
def test_k_larger_than_either_file_is_refused(ka, kb):
    a = _knn(np.zeros((5, ka), int), k=ka)
    b = _knn(np.zeros((5, kb), int), k=kb)
    with pytest.raises(InputError, match=f"k=2 is larger than the stored neighbours \\(k={ka} and k={kb}\\)"):
        knn_jaccards(a, b, 2)


def test_query_against_bank_files_translate_the_bank_ids():
    """Two searches of the same queries against the same bank, the bank's rows in another order in the second:
    the neighbours are compared as bank ids, not as row numbers (the translation no test checked)."""
    bank = np.array(["x", "y", "z", "w"], dtype=object)
    q = np.array(["q1", "q2"], dtype=object)
    a = KnnResult(q, np.array([[0, 1], [2, 3]]), np.ones((2, 2)), 2, bank_ids=bank)  # q1 {x, y}; q2 {z, w}
    b_bank = bank[::-1].copy()  # w, z, y, x
    b = KnnResult(q, np.array([[3, 1], [0, 2]]), np.ones((2, 2)), 2, bank_ids=b_bank)  # q1 {x, z}; q2 {w, y}
    np.testing.assert_allclose(knn_jaccards(a, b, 2), [1 / 3, 1 / 3])
    same = KnnResult(q, np.array([[3, 2], [1, 0]]), np.ones((2, 2)), 2, bank_ids=b_bank)  # q1 {x, y}; q2 {z, w}
    np.testing.assert_allclose(knn_jaccards(a, same, 2), [1, 1])
    other_bank = KnnResult(q, a.neighbors, a.similarity, 2, bank_ids=np.array(["x", "y", "z", "v"], dtype=object))
    with pytest.raises(InputError, match="different points"):
        knn_jaccards(a, other_bank, 2)
    with pytest.raises(InputError, match="one neighbour file is a self-kNN and the other a search of queries"):
        knn_jaccards(_knn(np.zeros((2, 2), int), ids=q), a, 2)


def test_same_setup_names_the_field_the_value_and_the_sub_field():
    base = {"corpus_fingerprint": "c", "format": "jsonl", "text_field": "text", "pair_field": None,
            "id_field": None, "split": None, "limit": None, "every": None, "offset": 0, "pooling": "cls",
            "normalize": False, "max_length": 64}
    same_setup(base, dict(base), "x")
    with pytest.raises(InputError) as e:
        same_setup(base, {**base, "pooling": "mean"}, "representation agreement")
    assert str(e.value) == ("representation agreement: the two artifacts differ in pooling ('cls' vs 'mean'); "
                            "compare models on the same records with the same embedding settings")
    nested_a, nested_b = {**base, "split": {"a": 1, "b": 2}}, {**base, "split": {"a": 1, "b": 3}}
    with pytest.raises(InputError) as e:
        same_setup(nested_a, nested_b, "w")
    assert "differ in split.b (2 vs 3)" in str(e.value)
    older = {k: v for k, v in base.items() if k != "max_length"}
    with pytest.raises(InputError) as e:
        same_setup(base, older, "z")
    assert str(e.value).startswith("z: the second artifact does not record its max_length")


def _es(ids, universe=None, source="s"):
    return ErrorSet(set(ids), frozenset(universe) if universe is not None else None, source)


def test_error_agreement_returns_exactly_its_fields():
    u = {"a", "b", "c", "d", "e"}
    got = error_agreement(_es({"a", "b"}, u, "A"), _es({"a", "b"}, u, "B"))
    assert got == {"jaccard": 1.0, "n_a": 2, "n_b": 2, "intersection": 2, "a_subset_of_b": True,
                   "b_subset_of_a": True, "frac_a_in_b": 1.0, "frac_b_in_a": 1.0, "universe": "checked (5 records)"}
    none = error_agreement(set(), {"x"})
    assert none["jaccard"] == 0.0 and math.isnan(none["frac_a_in_b"]) and none["frac_b_in_a"] == 0.0
    assert none["a_subset_of_b"] and not none["b_subset_of_a"] and "universe" not in none
    mixed = error_agreement(_es({"a"}, u), {"a", "b"})  # one ErrorSet and one plain set: no universe check
    assert "universe" not in mixed and mixed["jaccard"] == 0.5


def test_same_universe_checks_what_each_side_knows():
    u = {"a", "b", "c"}
    assert same_universe(_es({"a"}, u), _es({"b"}, u)) == "checked (3 records)"
    with pytest.raises(InputError, match=r"A was scored on 3 questions and B on 2 \(e.g. only in the first: \['c'\]\)"):
        same_universe(_es({"a"}, u, "A"), _es({"b"}, {"a", "b"}, "B"))
    # one side an id list without a universe: its ids must lie within the other's universe
    assert same_universe(_es({"a"}, u, "A"), _es({"b"}, None, "ids.txt")) == (
        "unchecked for ids.txt (an id list without --dataset; its ids lie within the other's)")
    assert same_universe(_es({"b"}, None, "ids.txt"), _es({"a"}, u, "A")).startswith("unchecked for ids.txt")
    with pytest.raises(InputError) as e:
        same_universe(_es({"a"}, u, "A"), _es({"z", "y"}, None, "ids.txt"))
    assert str(e.value) == ("prediction errors: ids.txt names 2 ids outside the 3 questions A was scored on "
                            "(e.g. ['y', 'z'])")
    with pytest.raises(InputError, match="ids.txt names 1 ids outside the 3 questions A"):
        same_universe(_es({"z"}, None, "ids.txt"), _es({"a"}, u, "A"))
    assert same_universe(_es({"a"}), _es({"b"})) == "unchecked (id lists without --dataset)"


def test_distribution_agreement_returns_exactly_its_fields():
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    o1 = OodResult(ids, [10], 0.95, {10: np.array([-1.0, -0.1, -0.9, -0.2])}, {10: -0.5})
    o2 = OodResult(ids[::-1].copy(), [10], 0.95, {10: np.array([-0.1, -0.9, -0.8, -0.1])}, {10: -0.5})
    assert distribution_agreement(o1, o2, 10) == {"jaccard": pytest.approx(1 / 3), "n_ood_a": 2, "n_ood_b": 2,
                                                  "k": 10}
    with pytest.raises(InputError, match=r"k=5 was not scored in both OOD results \(have \[10\] and \[10\]\)"):
        distribution_agreement(o1, o2, 5)
    o3 = OodResult(ids, [10], 0.9, o1.scores, o1.thresholds, meta={"tpr": 0.9})
    with pytest.raises(InputError, match="distribution agreement: the second artifact does not record its tpr|"
                                         "distribution agreement: the first artifact does not record its tpr"):
        distribution_agreement(o1, o3, 10)


def test_sampled_pairs_refuse_naming_the_field_and_keep_the_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = x + 0.5 * rng.normal(size=x.shape).astype(np.float32)
    a, b = knn_sampled(x, 5, 30, seed=1), knn_sampled(y, 5, 30, seed=1)
    full_y = knn_self(y, 5)
    # a sampled file first or second: the same per-point values, each side's own neighbours
    np.testing.assert_allclose(knn_jaccards(a, full_y, 5), knn_jaccards(a, b, 5))
    np.testing.assert_allclose(knn_jaccards(full_y, a, 5), knn_jaccards(b, a, 5))
    for other, field in ((knn_sampled(y, 5, 30, seed=2), "sample.seed"), (knn_sampled(y, 5, 31, seed=1), "sample.m")):
        with pytest.raises(InputError) as e:
            knn_jaccards(a, other, 5)
        assert e.value.field == field and f"differ in {field}" in str(e.value) and "--sample-seed" in str(e.value)
    bank = KnnResult(a.ids, a.neighbors, a.similarity, 5, meta=dict(a.meta), bank_ids=np.arange(200).astype(str))
    with pytest.raises(InputError) as e:
        knn_jaccards(bank, b, 5)
    assert e.value.field == "sample" and "not with a search of queries against a bank" in str(e.value)
    shuffled = knn_self(y, 5)
    shuffled.ids = np.array([f"{i}" for i in range(200)], dtype=object)[::-1].copy()
    with pytest.raises(InputError) as e:
        knn_jaccards(a, shuffled, 5)
    assert e.value.field == "sample.universe_sha256"


def test_refusals_word_for_word():
    a = _knn([[1, 2], [0, 2], [0, 1], [4, 0], [3, 0]])
    other = _knn(a.neighbors, ids=np.array(["p", "q", "r", "s", "x"], dtype=object))
    with pytest.raises(InputError) as e:
        knn_jaccards(a, other, 2)
    assert str(e.value).startswith("representation agreement: the two models were run on different points (1 ids "
                                   "only in the first, 1 only in the second; e.g. ['t'])")
    q = np.array(["q1", "q2"], dtype=object)
    bank = np.array(["x", "y", "z"], dtype=object)
    b1 = KnnResult(q, np.array([[0, 1], [1, 2]]), np.ones((2, 2)), 2, meta={"bank_selection": {"limit": 3}},
                   bank_ids=bank)
    b2 = KnnResult(q, b1.neighbors, b1.similarity, 2, meta={"bank_selection": {"limit": 4}}, bank_ids=bank)
    with pytest.raises(InputError) as e:
        knn_jaccards(b1, b2, 2)
    assert str(e.value) == ("representation agreement: the two artifacts differ in bank_selection.limit (3 vs 4); "
                            "compare models on the same records with the same embedding settings")
    b3 = KnnResult(q, b1.neighbors, b1.similarity, 2, meta=b1.meta, bank_ids=np.array(["x", "y", "w"], dtype=object))
    with pytest.raises(InputError) as e:
        knn_jaccards(b1, b3, 2)
    assert str(e.value).startswith("representation agreement: the two models were run on different points")
    # a field one artifact records as a mapping and the other as a value: compared whole
    with pytest.raises(InputError) as e:
        same_setup({"split": {"a": 1}}, {"split": "train"}, "w", keys=("split",))
    assert str(e.value) == ("w: the two artifacts differ in split ({'a': 1} vs 'train'); compare models on the same "
                            "records with the same embedding settings")
    with pytest.raises(InputError) as e:
        same_setup({"pooling": "cls"}, {}, "z", keys=("pooling",))
    assert str(e.value) == ("z: the second artifact does not record its pooling (made by an older lookalike?); re-run "
                            "the command that made it so the two can be checked against each other")
    u4 = {"a", "b", "c", "d", "e"}
    with pytest.raises(InputError) as e:
        same_universe(_es({"a"}, u4, "A"), _es({"a"}, {"a"}, "B"))
    assert str(e.value) == ("prediction errors: A was scored on 5 questions and B on 1 (e.g. only in the first: "
                            "['b', 'c', 'd']); error sets over different questions cannot be compared")
    with pytest.raises(InputError) as e:
        same_universe(_es({"a"}, u4, "A"), _es({"w", "x", "y", "z"}, None, "ids.txt"))
    assert str(e.value).endswith("(e.g. ['w', 'x', 'y'])")


def test_sampled_refusals_word_for_word_and_the_drawn_ids_checked():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    a, b = knn_sampled(x, 3, 20, seed=1), knn_sampled(x, 3, 20, seed=2)
    with pytest.raises(InputError) as e:
        knn_jaccards(a, b, 3)
    assert str(e.value) == ("field 'sample.seed': representation agreement: the two sampled files differ in "
                            "sample.seed (1 vs 2); "
                            "per-point Jaccards are comparable only on the same draw of the same points: run both "
                            "with the same --sample and --sample-seed")
    forged = knn_sampled(x, 3, 20, seed=1)
    forged.meta["sample"]["ids_sha256"] = "0" * 64  # the right universe, but not that draw's ids
    with pytest.raises(InputError) as e:
        knn_jaccards(forged, knn_self(x, 3), 3)
    assert e.value.field == "sample.ids_sha256" and str(e.value) == (
        "field 'sample.ids_sha256': representation agreement: the sampled file's drawn ids are not the exhaustive "
        "file's rows of that draw (sample.ids_sha256 differs)")
    bank = KnnResult(a.ids, a.neighbors, a.similarity, 3, meta=dict(a.meta), bank_ids=np.arange(120).astype(str))
    with pytest.raises(InputError) as e:
        knn_jaccards(a, bank, 3)
    assert str(e.value) == ("field 'sample': representation agreement: a sampled neighbour file is compared with a "
                            "sampled or an exhaustive self-kNN, not with a search of queries against a bank (knn "
                            "--queries)")
    from lookalike.analysis.agreement import knn_basis

    assert knn_basis(knn_self(x, 3), a) == ("estimated from 20 of 120 points (seed 1) (an exhaustive file compared on "
                                            "the draw)")
    # the sampled side keeps its own neighbours whichever side it is given on
    full = knn_self(x + 0.3 * rng.normal(size=x.shape).astype(np.float32), 3)
    left, right = knn_jaccards(a, full, 3), knn_jaccards(full, a, 3)
    np.testing.assert_allclose(left, right)
    assert not np.allclose(left, 1)


def test_row_jaccards_in_blocks_and_ood_k_checked_on_both_sides():
    from lookalike.analysis.agreement import _row_jaccards

    rng = np.random.default_rng(3)
    na, nb = rng.integers(0, 50, size=(9000, 4)), rng.integers(0, 50, size=(9000, 4))
    whole = np.array([len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(na, nb)])
    unique = np.array([len(set(x)) == 4 and len(set(y)) == 4 for x, y in zip(na, nb)])
    for block in (7, 4096, 100000):
        got = _row_jaccards(na, nb, 4, block)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got[unique], whole[unique])
    ids = np.array(["a", "b"], dtype=object)
    o1 = OodResult(ids, [5, 10], 0.95, {5: np.zeros(2), 10: np.zeros(2)}, {5: 0.0, 10: 0.0})
    o2 = OodResult(ids, [10], 0.95, {10: np.zeros(2)}, {10: 0.0})
    with pytest.raises(InputError, match=r"k=5 was not scored in both OOD results \(have \[5, 10\] and \[10\]\)"):
        distribution_agreement(o1, o2, 5)
    assert distribution_agreement(o1, o2)["k"] == 10  # the paper's k by default
    assert representation_agreement(_knn(np.zeros((5, 10), int), k=10), _knn(np.zeros((5, 10), int), k=10))["k"] == 10
