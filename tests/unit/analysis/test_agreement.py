"""Agreements on crafted artifacts against hand-computed Jaccards, means and variances, and `agree` on hand-made files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from lookalike.analysis.agreement import (
    distribution_agreement,
    error_agreement,
    jaccard,
    knn_jaccards,
    representation_agreement,
)
from lookalike.analysis.knn import KnnResult
from lookalike.analysis.ood import OodResult
from lookalike.cli import cli
from lookalike.errors import InputError


def test_jaccard_by_hand():
    assert jaccard({1, 2, 3}, {2, 3, 4}) == pytest.approx(2 / 4)
    assert jaccard(set(), {1}) == 0.0
    assert math.isnan(jaccard(set(), set()))
    e = error_agreement({"a", "b"}, {"a", "b", "c", "d"})
    assert e["jaccard"] == pytest.approx(0.5) and e["a_subset_of_b"] and not e["b_subset_of_a"]
    assert e["frac_a_in_b"] == 1.0 and e["frac_b_in_a"] == 0.5


def test_representation_by_hand():
    ids = np.array(["p", "q", "r", "s", "t"], dtype=object)
    # model A neighbours (rows), k=2
    a = KnnResult(ids, np.array([[1, 2], [0, 2], [0, 1], [4, 0], [3, 0]]), np.ones((5, 2)), 2)
    # model B lists the same points in another order: ids t, s, r, q, p
    ids_b = ids[::-1].copy()
    # B's neighbours in B's row numbering; translate by hand: B row 0 = t, 1 = s, 2 = r, 3 = q, 4 = p
    b = KnnResult(ids_b, np.array([[1, 2],    # t: {s, r}
                                   [0, 4],    # s: {t, p}
                                   [3, 4],    # r: {q, p}
                                   [2, 1],    # q: {r, s}
                                   [3, 0]]), np.ones((5, 2)), 2)  # p: {q, t}
    # per point (A's order p,q,r,s,t): A sets p{q,r} q{p,r} r{p,q} s{t,p} t{s,p}
    # vs B: p{q,t} -> 1/3; q{r,s} -> 1/3; r{q,p} -> 1; s{t,p} -> 1; t{s,r} -> 1/3
    expect = np.array([1 / 3, 1 / 3, 1, 1, 1 / 3])
    np.testing.assert_allclose(knn_jaccards(a, b, 2), expect)
    r = representation_agreement(a, b, 2)
    assert r["mean"] == pytest.approx(expect.mean()) and r["variance"] == pytest.approx(expect.var())
    # k=1: p{q} vs {q} =1; q{p} vs {r} =0; r{p} vs {q} =0; s{t} vs {t}=1; t{s} vs {s}=1
    np.testing.assert_allclose(knn_jaccards(a, b, 1), [1, 0, 0, 1, 1])
    with pytest.raises(InputError, match="larger than the stored neighbours"):
        knn_jaccards(a, b, 3)
    c = KnnResult(np.array(["p", "q", "r", "s", "x"], dtype=object), a.neighbors, a.similarity, 2)
    with pytest.raises(InputError, match="different points"):
        knn_jaccards(a, c, 2)


def test_distribution_by_hand():
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    o1 = OodResult(ids, [10], 0.95, {10: np.array([-1.0, -0.1, -0.9, -0.2])}, {10: -0.5})  # OOD {a, c}
    o2 = OodResult(ids[::-1].copy(), [10], 0.95, {10: np.array([-0.1, -0.9, -0.8, -0.1])}, {10: -0.5})  # {c, b}
    d = distribution_agreement(o1, o2, 10)
    assert d["jaccard"] == pytest.approx(1 / 3) and d["n_ood_a"] == 2 and d["n_ood_b"] == 2


def test_agree_cli(tmp_path):
    ids = np.array(["p", "q", "r"], dtype=object)
    KnnResult(ids, np.array([[1], [0], [0]]), np.ones((3, 1)), 1).save(tmp_path / "a.h5")
    KnnResult(ids, np.array([[1], [2], [1]]), np.ones((3, 1)), 1).save(tmp_path / "b.h5")
    for name, errs in (("a", ["p", "q"]), ("b", ["q"])):
        (tmp_path / f"{name}.json").write_text(json.dumps({"kind": "lookalike.errors", "error_ids": errs}))
    r = CliRunner().invoke(cli, ["agree", "--knn", f"A={tmp_path / 'a.h5'}", "--knn", f"B={tmp_path / 'b.h5'}",
                                 "--errors", f"A={tmp_path / 'a.json'}", "--errors", f"B={tmp_path / 'b.json'}",
                                 "--k", "1", "--format", "json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)[0]
    assert row["repr_mean"] == pytest.approx(1 / 3) and row["errors_jaccard"] == pytest.approx(0.5)
    assert row["i_errors_subset_of_j"] is False


def test_agree_compares_error_sets_within_their_task(tmp_path):
    """Classification error files land in the classification column, not the QA one; error sets of two tasks
    are refused in one line rather than compared."""
    def errors(name, task, ids):
        (tmp_path / name).write_text(json.dumps({"kind": "lookalike.errors", "task": task, "error_ids": ids}))
        return f"{name[0]}={tmp_path / name}"

    r = CliRunner().invoke(cli, ["agree", "--errors", errors("a.json", "cls", ["p", "q"]),
                                 "--errors", errors("b.json", "cls", ["q"]), "--format", "json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)[0]
    assert row["cls_errors_jaccard"] == pytest.approx(0.5) and "errors_jaccard" not in row
    r = CliRunner().invoke(cli, ["agree", "--errors", errors("c.json", "cls", ["p"]),
                                 "--errors", errors("d.json", "qa", ["p"]), "--format", "json"])
    assert r.exit_code == 2 and "different tasks (c: cls, d: qa)" in r.stderr, r.output


def test_a_collapsed_classifier_or_one_class_set_is_flagged_never_counted(tmp_path):
    """Round three: a classifier that predicted 'positive' for every record of an all-positive evaluation set had
    0 errors, and the report called its error Jaccard "larger than the noise". Now the class counts travel with
    the error set, and its Jaccards are marked not meaningful in Table 2 and the noise table."""
    from lookalike.analysis.scoring import ErrorSet, cls_eval
    from lookalike.analysis.tables import ModelArtifacts, noise_rows, table2_display, table2_rows
    from lookalike.data import Record

    recs = [Record(f"r{i}", "t", label=1 if i < 90 else 0) for i in range(100)]
    metrics, _ = cls_eval(recs, {f"r{i}": {"label_id": 1} for i in range(100)}, {0: "negative", 1: "positive"})
    assert metrics["class_counts"] == {"gold": {"0": 10, "1": 90}, "predicted": {"1": 100}}
    universe = frozenset(r.id for r in recs)
    collapsed = ErrorSet({f"r{i}" for i in range(90, 100)}, universe, "L3/errors.json", task="cls",
                         class_counts=metrics["class_counts"])
    assert "predicts 1 for 100% of the records (collapsed)" in collapsed.degenerate
    one_class = ErrorSet(set(), universe, "x", task="cls", class_counts={"gold": {"1": 100}, "predicted": {"1": 100}})
    assert "one class" in one_class.degenerate
    fine = ErrorSet({"r1", "r95"}, universe, "y", task="cls",
                    class_counts={"gold": {"0": 10, "1": 90}, "predicted": {"0": 12, "1": 88}})
    assert fine.degenerate is None
    other = ErrorSet({"r3", "r96", "r97"}, universe, "z", task="cls",
                     class_counts={"gold": {"0": 10, "1": 90}, "predicted": {"0": 10, "1": 90}})
    arts = {"ref": ModelArtifacts(errors={"cls": fine}), "x": ModelArtifacts(errors={"cls": collapsed}),
            "y": ModelArtifacts(errors={"cls": other})}
    rows = table2_rows(["ref", "x", "y"], arts, reps=50)
    by = {(r["model_i"], r["model_j"]): r for r in rows}
    assert by[("ref", "x")]["cls_errors_jaccard_meaningful"] is False
    assert "collapsed" in by[("ref", "x")]["cls_errors_jaccard_verdict"]
    assert "cls_errors_jaccard_meaningful" not in by[("ref", "y")]
    cells, _, _ = table2_display(rows)
    assert (rows[0]["model_i"], rows[0]["model_j"]) == ("ref", "x")
    assert cells[0]["cls_errors_jaccard"].endswith("✗ not meaningful")
    assert not cells[1]["cls_errors_jaccard"].endswith("✗ not meaningful")
    noise = [r for r in noise_rows(["ref", "x", "y"], arts, reps=50) if "classification" in r["metric"]]
    assert noise and all(r["verdict"].startswith("not meaningful") for r in noise)


def test_containment_of_an_empty_error_set_is_undefined_not_a_crash():
    from lookalike.analysis.agreement import error_agreement

    e = error_agreement({"a", "b"}, set())
    assert math.isnan(e["frac_b_in_a"]) and e["frac_a_in_b"] == 0.0 and e["b_subset_of_a"] and not e["a_subset_of_b"]
