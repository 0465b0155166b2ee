"""Table 2 with intervals on hand-made artifacts (known Jaccards; intervals against an independent bootstrap), the
noise verdicts, the OOD meaningfulness rule, Figure 1's markers and bands."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lookalike.analysis.knn import KnnResult
from lookalike.analysis.ood import OodResult, meaningful
from lookalike.analysis.scoring import ErrorSet
from lookalike.analysis.tables import ModelArtifacts, noise_rows, table2_display, table2_rows
from lookalike.errors import InputError


def _errors(ids, universe):
    return ErrorSet(set(ids), frozenset(universe), "hand-made")


def _independent_jaccard_ci(a: set, b: set, universe: list, reps=2000, seed=123):
    """A plain bootstrap written separately: resample example indices, recount the sets."""
    rng = np.random.default_rng(seed)
    ua = np.array([x in a for x in universe])
    ub = np.array([x in b for x in universe])
    vals = []
    for _ in range(reps):
        idx = rng.integers(0, len(universe), len(universe))
        inter, union = (ua[idx] & ub[idx]).sum(), (ua[idx] | ub[idx]).sum()
        vals.append(inter / union)
    return np.quantile(vals, [0.025, 0.975])


def test_table2_values_and_intervals_by_hand():
    universe = [f"q{i}" for i in range(200)]
    ref = set(universe[:60])                 # 60 errors
    near = set(universe[10:70])              # overlap 50, union 70: J = 5/7
    far = set(universe[50:150])              # overlap 10, union 150: J = 1/15
    arts = {"ref": ModelArtifacts(errors={"qa": _errors(ref, universe)}),
            "near": ModelArtifacts(errors={"qa": _errors(near, universe)}),
            "far": ModelArtifacts(errors={"qa": _errors(far, universe)}),
            "same": ModelArtifacts(errors={"qa": _errors(ref, universe)})}
    rows = {(r["model_i"], r["model_j"]): r for r in table2_rows(list(arts), arts, reps=2000)}
    r = rows[("ref", "near")]
    assert r["errors_jaccard"] == pytest.approx(5 / 7)
    lo, hi = _independent_jaccard_ci(ref, near, universe)
    assert r["errors_jaccard_lo"] == pytest.approx(lo, abs=0.03) and r["errors_jaccard_hi"] == pytest.approx(hi, abs=0.03)
    assert r["errors_jaccard_lo"] < 5 / 7 < r["errors_jaccard_hi"]
    assert rows[("ref", "far")]["errors_jaccard"] == pytest.approx(1 / 15)
    # chance agreement of independent sets of sizes 60 and 60 of 200: (60*60/200) / (120 - 18) = 18/102
    assert r["errors_jaccard_chance"] == pytest.approx(18 / 102)
    rng = np.random.default_rng(1)  # ... which random sets of those sizes do show, on average
    sim = [len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in
           ((rng.choice(200, 60, replace=False), rng.choice(200, 60, replace=False)) for _ in range(3000))]
    assert np.mean(sim) == pytest.approx(18 / 102, abs=0.01)
    same = rows[("ref", "same")]
    assert same["errors_jaccard"] == same["errors_jaccard_lo"] == same["errors_jaccard_hi"] == 1.0
    shown, cols, heads = table2_display(list(rows.values()))
    assert shown[0]["errors_jaccard"].startswith("0.714 [") and "Prediction errors (QA)" in heads
    # error sets over other questions are refused, not compared
    other = {"ref": arts["ref"], "x": ModelArtifacts(errors={"qa": _errors(near, universe[:150])})}
    with pytest.raises(InputError, match="different questions"):
        table2_rows(["ref", "x"], other)


def test_representation_interval_is_over_points():
    rng = np.random.default_rng(0)
    n, k = 300, 3
    ids = np.array([f"p{i}" for i in range(n)], dtype=object)
    base = np.array([rng.choice([j for j in range(n) if j != i], k, replace=False) for i in range(n)])
    other = base.copy()
    other[: n // 2, 0] = (np.arange(n // 2) + 7) % n  # half the points lose one neighbour
    other[: n // 2, 0] = np.where(np.isin(other[: n // 2, 0], base[: n // 2]) | (other[: n // 2, 0] == np.arange(n // 2)),
                                  (other[: n // 2, 0] + 1) % n, other[: n // 2, 0])
    arts = {"a": ModelArtifacts(knn={"before": KnnResult(ids, base, np.ones((n, k)), k)}),
            "b": ModelArtifacts(knn={"before": KnnResult(ids, other, np.ones((n, k)), k)})}
    (row,) = table2_rows(["a", "b"], arts, k=k, reps=1000)
    per_point = np.array([len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(base, other)])
    assert row["repr_before_mean"] == pytest.approx(per_point.mean())
    assert row["repr_before_var"] == pytest.approx(per_point.var())
    se = per_point.std() / math.sqrt(n)
    assert row["repr_before_mean_lo"] == pytest.approx(per_point.mean() - 1.96 * se, abs=0.012)
    assert row["repr_before_mean_hi"] == pytest.approx(per_point.mean() + 1.96 * se, abs=0.012)


def test_noise_rows_separate_real_differences_from_noise():
    universe = [f"q{i}" for i in range(400)]
    ref = set(universe[:100])
    close = set(universe[5:105])            # J ~ 0.9
    far = set(universe[60:160])             # J ~ 0.25
    close2 = set(universe[:95]) | set(universe[200:205])  # as close as `close` (J = 95/105), other members
    arts = {n: ModelArtifacts(errors={"qa": _errors(s, universe)}) for n, s in
            (("ref", ref), ("close", close), ("far", far), ("close2", close2))}
    rows = {(r["model_x"], r["model_y"]): r for r in noise_rows(list(arts), arts, reps=1000)}
    big = rows[("close", "far")]
    assert big["verdict"] == "larger than the noise" and big["lo"] > 0 and big["difference"] > 0.5
    assert rows[("close", "close2")]["verdict"] == "within the noise"


def test_ood_meaningfulness_rule():
    ids = np.array([f"t{i}" for i in range(100)], dtype=object)
    scores = np.linspace(-1, 0, 100)

    def result(threshold, auroc):
        return OodResult(ids, [10], 0.95, {10: scores}, {10: threshold}, {10: {"auroc": auroc} if auroc else {}})

    ok = meaningful(result(-0.5, 0.93), 10)
    assert ok["ok"] and ok["n_ood"] == 50 and ok["fraction"] == 0.5
    few = meaningful(result(-0.97, 0.95), 10)  # 3 of 100 flagged
    assert not few["ok"] and "3.0%" in few["reason"]
    weak = meaningful(result(-0.5, 0.63), 10)
    assert not weak["ok"] and "AUROC 0.630" in weak["reason"]
    assert not meaningful(result(-0.5, None), 10)["ok"]


def test_figure_1c_marks_points_that_are_not_meaningful_and_draws_bands(tmp_path):
    """Figure 1(c): a k whose OOD sets fail the meaningfulness rule (1 of 100 flagged) is marked, a good k is
    not, and every point has a bootstrap band that holds its value; the figure is drawn from those curves."""
    from lookalike.analysis.report import plot_sweep
    from lookalike.analysis.tables import ood_sweep

    ids = np.array([f"t{i}" for i in range(100)], dtype=object)
    scores = np.linspace(-1, 0, 100)

    def result(shift):
        s = {1: scores, 10: np.roll(scores, shift)}
        return OodResult(ids, [1, 10], 0.95, s, {1: -0.995, 10: -0.5}, {1: {"auroc": 0.95}, 10: {"auroc": 0.95}})

    arts = {"a": ModelArtifacts(ood=result(0)), "b": ModelArtifacts(ood=result(5))}
    (curve,) = ood_sweep(["a", "b"], arts, [1, 10], reps=200).values()
    assert curve.not_meaningful == [True, False]
    assert curve.reasons[1] == "" and curve.reasons[0].startswith("a flags 1.0% of the challenge set (< 5%)")
    assert all(lo <= v <= hi for v, lo, hi in zip(curve.values[1:], curve.lo[1:], curve.hi[1:]))
    plot_sweep({"a vs b": curve}, "t", "J", tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_the_noise_headline_counts_the_rows_the_table_shows():
    """Round three: the headline said "9 of 12 exclude 0" where 11 of 12 intervals did (two set aside as not
    meaningful, unsaid). It now counts the table's own rows and says what it set aside."""
    import math

    from lookalike.analysis.tables import noise_headline

    def row(lo, hi, verdict=None):
        v = verdict or (("larger than the noise" if lo > 0 or hi < 0 else "within the noise")
                        if not math.isnan(lo) else "no interval")
        return {"lo": lo, "hi": hi, "verdict": v}

    noise = [row(0.1, 0.2), row(-0.3, -0.1), row(-0.1, 0.2), row(math.nan, math.nan),
             row(0.05, 0.3, "not meaningful: L3 AUROC 0.84 < 0.9"), row(0.2, 0.4, "not meaningful: L2 AUROC 0.79")]
    text = noise_headline(noise, "fp32")
    excluding = sum(1 for r in noise if not math.isnan(r["lo"]) and (r["lo"] > 0 or r["hi"] < 0))
    assert text.startswith(f"{excluding} of {len(noise)} paired differences exclude 0") and excluding == 4
    assert "2 of them are set aside as not meaningful" in text and "so 2 are counted as larger" in text
    assert noise_headline(noise[:3], "fp32") == ("2 of 3 paired differences exclude 0 at 95% (m(fp32, X) - "
                                                 "m(fp32, Y) for each measure m, on the same points and "
                                                 "resamples).")


def test_one_rounding_rule_and_every_shown_column_explained():
    from lookalike.analysis.report import markdown_table, round3
    from lookalike.analysis.tables import COLUMN_NOTES, TABLE3_COLUMNS, column_notes

    assert [round3(v) for v in (0.73471, 0.021349, 30.7692, 1234.6, 4.2e-6, -0.0031, 1.0)] == \
        ["0.735", "0.0213", "30.8", "1235", "4.2e-06", "-0.00310", "1.00"]
    assert markdown_table([{"a": 30.7692}], ["a"]).splitlines()[-1] == "| 30.8 |"
    notes = column_notes(["model_i", "repr_before_mean", "repr_after_mean", "repr_before_var", "ood_jaccard_chance",
                          "errors_jaccard_chance", "spread"])
    assert notes.startswith("Columns: repr mean — mean over points") and notes.count("chance —") == 1
    assert "repr var — variance over points" in notes and "spread — (slowest − fastest)" in notes
    assert column_notes(["model", "n"]) == ""
    for c in ("percent_change", "attack_success_rate", "avg_perturbed_words_pct"):
        assert c in TABLE3_COLUMNS[0] and c in COLUMN_NOTES


def test_figure_legends_give_each_hollow_point_s_reason(tmp_path, monkeypatch):
    """Round three: the legend said "OOD sets too small" where the cause was AUROC < 0.9. It now names the
    verdicts' own kinds of reason."""
    import matplotlib.axes

    from lookalike.analysis.report import plot_sweep, why_kinds
    from lookalike.analysis.tables import Curve

    assert why_kinds("L3 AUROC 0.840 < 0.9; L2 flags 1.0% of the challenge set (< 5%)") == \
        ["AUROC < 0.9", "flags < 5% of the challenge set"]
    assert why_kinds("a no AUROC (give held-out in-distribution points)") == ["no AUROC"]
    labels = []
    real = matplotlib.axes.Axes.plot

    def plot(self, *args, **kw):
        labels.append(kw.get("label"))
        return real(self, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    curve = Curve([1, 50, 100], [0.5, 0.4, 0.3], [0.4] * 3, [0.6] * 3, [False, True, True],
                  ["", "L3 AUROC 0.840 < 0.9", "L3 AUROC 0.830 < 0.9; L2 flags 2.0% of the challenge set (< 5%)"])
    plot_sweep({"ref vs L3": curve}, "t", "J", tmp_path / "f.png")
    assert "✗ not meaningful (AUROC < 0.9; flags < 5% of the challenge set)" in labels


def test_the_report_opens_with_how_to_read_it_and_ends_with_its_machine(tmp_path):
    from lookalike.analysis.tables import ModelArtifacts, ReportSpec, write_report
    from lookalike.core.cpu import cpu_info

    universe = [f"q{i}" for i in range(50)]
    arts = {n: ModelArtifacts(errors={"qa": _errors(set(universe[i:i + 10]), universe)}) for n, i in
            (("ref", 0), ("x", 3))}
    summary = write_report(["ref", "x"], arts, ReportSpec("t", reps=20, pooling="mean", measures=("jaccard", "cka")),
                           tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.index("## How to read this") < md.index("Table 1") if "Table 1" in md else "## How to read this" in md
    assert "the reference, ref (the first model)" in md and "mean pooling" in md and "(cka)" in md
    tail = md[md.index("## Provenance"):]
    assert cpu_info()["model"] in tail and "onnxruntime" in tail and "lookalike" in tail
    assert summary["machine"].startswith("Machine: ")
