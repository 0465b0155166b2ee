"""Agreements on crafted artifacts against hand-computed Jaccards, means and variances; the experiment runner."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
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


@pytest.mark.slow
def test_run_experiment_caches_and_reports(tiny_models, shared_data, tmp_path):
    cfg = {
        "title": "tiny family",
        "models": [
            {"name": "big", "base": str(tiny_models["bert4"])},
            {"name": "big-int8", "like": "big", "variant": {"quantize": "int8"}},
            {"name": "big-L2", "like": "big", "variant": {"keep_layers": [0, 3]}},
        ],
        "datasets": {
            "representation": {"path": str(shared_data / "squad2_dev500"), "limit": 60},
            "ood_train": {"path": str(shared_data / "squad2_dev500"), "limit": 80},
            "ood_test": {"path": str(shared_data / "cuad500"), "limit": 30},
        },
        "steps": {"embed": {"max_length": 128}, "knn": {"k": 5, "sweep": [1, 5, 10]},
                  "ood": {"k": 5, "sweep": [1, 5]}, "latency": {"batch_sizes": [1], "seq_lengths": [16], "repeat": 2}},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(cli, ["run", str(path), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    report = tmp_path / "out" / "report"
    t2 = json.loads((report / "table2_agreement.json").read_text())
    assert [(x["model_i"], x["model_j"]) for x in t2] == [("big", "big-int8"), ("big", "big-L2"), ("big-int8", "big-L2")]
    assert all(0 <= x["repr_before_mean"] <= 1 and 0 <= x["ood_jaccard"] <= 1 for x in t2 if not math.isnan(x["ood_jaccard"]))
    for f in ("figure1a.png", "figure1c.png", "report.md", "report.html", "table1_models.csv", "latency.md"):
        assert (report / f).exists(), f
    # the latency table times every model in one step, run by run in turn, and says how much the rounds spread
    assert len(list((tmp_path / "out" / "steps").glob("latency*/*/latency-*.json")) or
               list((tmp_path / "out" / "steps").rglob("latency-*.json"))) == 3
    assert "spread" in (report / "latency.md").read_text()
    steps_before = sorted(p.parent.name for p in (tmp_path / "out" / "steps").rglob(".done.json"))
    # re-run: everything cached; change the OOD sweep: only the ood steps re-run
    r = CliRunner().invoke(cli, ["run", str(path), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0 and "[embed]" not in r.output and "[ood]" not in r.output
    assert sorted(p.parent.name for p in (tmp_path / "out" / "steps").rglob(".done.json")) == steps_before
    cfg["steps"]["ood"]["sweep"] = [1, 5, 20]
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(cli, ["run", str(path), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0
    assert "[ood]" in r.output and "[embed]" not in r.output and "[knn]" not in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: a, like: nope}]\n")
    r = CliRunner().invoke(cli, ["run", str(bad)])
    assert r.exit_code == 2 and "names no earlier model" in r.output


@pytest.mark.slow
def test_demo_offline_small(tmp_path):
    """`lookalike demo` end to end on the packaged MiniLM family: all four characteristics (small corpus)."""
    r = CliRunner().invoke(cli, ["demo", str(tmp_path / "demo"), "--docs", "150", "--ood", "40", "--attack-n", "3"])
    assert r.exit_code == 0, r.output
    report = tmp_path / "demo" / "report"
    t2 = json.loads((report / "table2_agreement.json").read_text())
    assert len(t2) == 6  # 4 models: fp32, int8, L3, L2
    first = [x for x in t2 if x["model_i"] == "MiniLM-L6 (fp32)"]
    int8 = next(x for x in first if x["model_j"] == "MiniLM int8")
    l2 = next(x for x in first if x["model_j"].startswith("MiniLM L2"))
    for row in t2:  # every characteristic, each with its interval
        for col in ("repr_before_mean", "repr_after_mean", "ood_jaccard", "cls_errors_jaccard"):
            assert col in row and (row[col] is None or row[f"{col}_lo"] <= row[col] <= row[f"{col}_hi"]), col
    # quantisation keeps neighbourhoods far better than dropping four of six layers
    assert int8["repr_before_mean"] > l2["repr_before_mean"] and int8["repr_after_mean"] > l2["repr_after_mean"]
    assert 0 < int8["repr_before_var"] < 0.25
    t1 = json.loads((report / "table1_models.json").read_text())
    assert [x["layers"] for x in t1] == [6, 6, 3, 2] and t1[1]["size_MB"] < t1[0]["size_MB"] / 3
    t3 = json.loads((report / "table3_attack.json").read_text())
    assert [x["target"] for x in t3] == [x["model"] for x in t1] and all(x["n"] == 3 for x in t3)
    lat = json.loads((report / "latency.json").read_text())
    assert {x["model"] for x in lat} == {x["model"] for x in t1}
    text = (report / "report.md").read_text()
    for part in ("Figure 1(a)", "Figure 1(b)", "Figure 1(c)", "Table 3", "fill-mask accuracy", "larger than the noise"):
        assert part in text, part
    assert all((report / f"figure1{t}.png").exists() for t in "abc")


def test_like_inherits_the_recipe_but_trains_its_own_base(tmp_path):
    """`like:` copies a fine-tuning recipe; the model it names trains its own base, unless the recipe names one."""
    from lookalike.experiment import parse_config

    recipe = {"finetune": {"data": "squad_v2:train", "epochs": 2, "every": 2}}
    cfg = {"models": [{"name": "large", "base": "bert-large-uncased", "qa": recipe},
                      {"name": "base", "like": "large", "base": "bert-base-uncased"},
                      {"name": "pinned", "like": "large", "base": "x/y",
                       "qa": {"finetune": {**recipe["finetune"], "model": "my/checkpoint"}}}]}
    models, _, _ = parse_config(cfg, tmp_path)
    by = {m.name: m for m in models}
    assert by["large"].qa.model == "bert-large-uncased" and by["base"].qa.model == "bert-base-uncased"
    assert by["base"].qa.params.epochs == 2 and by["base"].qa.corpus.every == 2
    assert by["pinned"].qa.model == "my/checkpoint"
