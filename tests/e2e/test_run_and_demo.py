"""`lookalike run` caches its steps and reports; `lookalike demo` end to end on a small corpus (all four
characteristics)."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from click.testing import CliRunner

from lookalike.cli import cli


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
    # the field's other representation measures, each against the reference with its interval and chance level
    measures = json.loads((report / "representation_measures.json").read_text())
    assert {(m["model"], m["phase"]) for m in measures} >= {("MiniLM int8", "before FT"), ("MiniLM int8", "after FT")}
    for m in measures:
        for name in ("mutual_knn", "cknna", "cka", "cka_debiased"):
            assert m[f"{name}_lo"] <= m[name] <= m[f"{name}_hi"] and f"{name}_chance" in m, (m["model"], name)
    int8m = next(m for m in measures if m["model"] == "MiniLM int8" and m["phase"] == "before FT")
    l2m = next(m for m in measures if m["model"].startswith("MiniLM L2") and m["phase"] == "before FT")
    assert int8m["cka"] > l2m["cka"] and int8m["mutual_knn"] > l2m["mutual_knn"]
    assert "Representation, other measures" in text and (report / "figure_measures.png").exists()
