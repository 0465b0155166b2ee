"""The paper's tables and figures from stored artifacts: one builder per table, each taking plain artifacts
(`ModelArtifacts` per model) and returning rows; `write_report` composes them into report.md/.html.

`lookalike agree` and `lookalike run` call the same Table 2 builder.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.manifest import ExportManifest, load_manifest
from ..files import load_json
from ..models import model_label
from ..outputs import OwnedFolder
from .agreement import (
    distribution_agreement,
    error_agreement,
    knn_basis,
    knn_jaccards,
    pairs,
    same_universe,
)
from .knn import KnnResult, load_knn
from .ood import OodResult, load_ood, meaningful
from .report import Report, markdown_table, plot_sweep, round3, write_table
from .scoring import ErrorSet, load_errors
from .uncertainty import jaccard_interval, mean_interval, paired_jaccard_difference, paired_mean_difference

PHASES = ("before", "after")


@dataclass(frozen=True)
class ErrorColumns:
    """How one prediction task's error sets appear in the report: Table 2's column, the noise table's label, the
    containment table's task name, Table 2's heading."""

    column: str
    label: str
    subset_task: str
    heading: str
    short: str  # the chance table's column heading


# by task name (lookalike.tasks): QA is the paper's, classification beyond it; the order is the report's
ERROR_COLUMNS = {"qa": ErrorColumns("errors_jaccard", "QA error sets", "qa", "Prediction errors (QA)", "QA errors"),
                 "cls": ErrorColumns("cls_errors_jaccard", "classification error sets", "classification",
                                     "Prediction errors (classification)", "classification errors")}


@dataclass
class ModelArtifacts:
    """What one model contributed, loaded from its stored files (any part may be missing)."""

    manifest: ExportManifest | None = None
    errors: dict[str, ErrorSet] = field(default_factory=dict)  # by task: {"qa": ..., "cls": ...}
    knn: dict[str, KnnResult] = field(default_factory=dict)  # {"before": ..., "after": ...}
    ood: OodResult | None = None
    ood_encoder: str = ""
    metrics: dict[str, dict] = field(default_factory=dict)  # by task, from a predict folder's metrics.json
    attack: dict | None = None  # attack summary.json
    latency: dict | None = None  # {"device", "rows"}
    stores: dict[str, Path] = field(default_factory=dict)  # the representation stores by phase (CKA reads them)

    @classmethod
    def load(cls, *, manifest: Path | None = None, knn: dict[str, Path] | None = None, ood: Path | None = None,
             ood_encoder: str = "", errors: dict[str, Path] | None = None, dataset=None, attack: Path | None = None,
             latency: Path | None = None, stores: dict[str, Path] | None = None) -> ModelArtifacts:
        """One model's artifacts from their files: an export folder's manifest, neighbour files by phase, an
        ood.json, error sets by task (a `predict` output folder, whose metrics.json comes along, or an error-set
        file: `dataset` checks its ids), an attack folder's summary.json, a latency.json. The run and `agree`
        both load through here."""
        m = cls(manifest=load_manifest(manifest) if manifest else None, ood_encoder=ood_encoder)
        m.knn = {phase: load_knn(p) for phase, p in (knn or {}).items()}
        m.ood = load_ood(ood) if ood else None
        for task, path in (errors or {}).items():
            if path is None:
                continue
            m.errors[task] = load_errors(path, dataset)
            if Path(path).is_dir():
                m.metrics[task] = load_json(Path(path) / "metrics.json")
        m.attack = load_json(Path(attack) / "summary.json") if attack else None
        m.latency = load_json(latency) if latency else None
        m.stores = dict(stores or {})
        return m


# --------------------------------------------------------------------------- Table 1

def table1_rows(names, arts: dict[str, ModelArtifacts]) -> list[dict]:
    rows = []
    for n in names:
        m = arts[n].manifest
        if m:
            rows.append({"model": n, "layers": m.num_layers, "parameters_M": round(m.parameters / 1e6, 2),
                         "embedding_dim": m.hidden_size, "size_MB": round(m.file_size / 1e6, 1),
                         "variant": m.variant_description, "source": model_label(m.source_model)})
    return rows


TABLE1_COLUMNS = (["model", "layers", "parameters_M", "embedding_dim", "size_MB", "variant", "source"],
                  ["Model", "Layers", "Parameters (M)", "Embedding dim", "ONNX size (MB)", "Variant", "Source"])


# --------------------------------------------------------------------------- Table 2

def _members(universe, *sets) -> list[np.ndarray]:
    ids = sorted(universe)
    return [np.fromiter((x in s for x in ids), dtype=bool, count=len(ids)) for s in sets]


def chance_jaccard(n_a: int, n_b: int, n: int) -> float:
    """Expected Jaccard of two independent random subsets of sizes n_a and n_b of an n-element universe: the
    agreement two models would show by their error (or OOD) rates alone."""
    if n <= 0 or n_a + n_b == 0:
        return math.nan
    inter = n_a * n_b / n
    return inter / (n_a + n_b - inter)


def _set_ci(universe, a: set, b: set, reps: int) -> tuple[float, float]:
    if universe is None or reps <= 0:
        return math.nan, math.nan
    ma, mb = _members(universe, a, b)
    return jaccard_interval(ma, mb, reps)


def _error_universe(a: ErrorSet, b: ErrorSet):
    same_universe(a, b)
    return a.universe if a.universe is not None else b.universe


def table2_rows(names, arts: dict[str, ModelArtifacts], k: int = 10, k_ood: int = 10, reps: int = 1000, *,
                phases: bool = True, subsets: bool = False) -> list[dict]:
    """One row per model pair (in the given order): each Jaccard with its bootstrap 95% interval
    (`*_lo`, `*_hi`; points for representation, examples for set Jaccards), and the representation variance.

    phases: representation columns per phase (`repr_before_*`, `repr_after_*`, the paper's); False: one phase,
    `repr_*` (neighbour files with no before/after). subsets: the QA error sets' containment too
    (`i_errors_subset_of_j`, `frac_i_in_j`, `universe`)."""
    rows = []
    for a, b in pairs(names):
        A, B = arts[a], arts[b]
        row: dict = {"model_i": a, "model_j": b}
        for task, cols in ERROR_COLUMNS.items():
            ea, eb, col = A.errors.get(task), B.errors.get(task), cols.column
            if ea is not None and eb is not None:
                agreement = error_agreement(ea, eb)
                row[col] = agreement["jaccard"]
                universe = _error_universe(ea, eb)
                row[f"{col}_lo"], row[f"{col}_hi"] = _set_ci(universe, ea.ids, eb.ids, reps)
                if universe is not None:
                    row[f"{col}_chance"] = chance_jaccard(len(ea.ids), len(eb.ids), len(universe))
                why = [f"{n}: {e.degenerate}" for n, e in ((a, ea), (b, eb)) if e.degenerate]
                if why:  # one class, or a collapsed classifier: flagged, and never counted as a difference
                    row[f"{col}_meaningful"], row[f"{col}_verdict"] = False, "not meaningful: " + "; ".join(why)
                if subsets and task == "qa":  # the paper's containment check is on its QA error sets
                    row.update(i_errors_subset_of_j=agreement["a_subset_of_b"], frac_i_in_j=agreement["frac_a_in_b"],
                               universe=agreement.get("universe"))
        for phase in PHASES:
            if phase in A.knn and phase in B.knn:
                j = knn_jaccards(A.knn[phase], B.knn[phase], k)
                prefix = f"repr_{phase}" if phases else "repr"
                row[f"{prefix}_mean"], row[f"{prefix}_var"] = float(j.mean()), float(j.var())
                row[f"{prefix}_mean_lo"], row[f"{prefix}_mean_hi"] = (mean_interval(j, reps) if reps > 0
                                                                      else (math.nan, math.nan))
                row[f"{prefix}_basis"] = knn_basis(A.knn[phase], B.knn[phase])
        if A.ood is not None and B.ood is not None:
            row["ood_jaccard"] = distribution_agreement(A.ood, B.ood, k_ood)["jaccard"]
            row["ood_jaccard_lo"], row["ood_jaccard_hi"] = _set_ci(set(A.ood.test_ids), A.ood.ood_ids(k_ood),
                                                                   B.ood.ood_ids(k_ood), reps)
            row["ood_jaccard_chance"] = chance_jaccard(len(A.ood.ood_ids(k_ood)), len(B.ood.ood_ids(k_ood)),
                                                       len(A.ood.test_ids))
            row["ood_meaningful"], row["ood_verdict"] = ood_verdict({a: A.ood, b: B.ood}, k_ood)
        rows.append(row)
    return rows


def ood_verdict(results: dict[str, OodResult], k: int) -> tuple[bool, str]:
    """(meaningful?, why) for an agreement over these models' OOD sets: every model must pass the rule
    (`ood.meaningful`), else the Jaccard compares sets that say little."""
    failing = [(n, meaningful(o, k)["reason"]) for n, o in results.items() if not meaningful(o, k)["ok"]]
    if not failing:
        return True, "ok"
    return False, "not meaningful: " + "; ".join(f"{n} {why}" for n, why in failing)


TABLE2_METRICS = [(ERROR_COLUMNS["qa"].column, ERROR_COLUMNS["qa"].heading),
                  ("repr_before_mean", "Repr. before FT, mean"), ("repr_before_var", "Repr. before FT, var"),
                  ("repr_after_mean", "Repr. after FT, mean"), ("repr_after_var", "Repr. after FT, var"),
                  ("ood_jaccard", "Data distribution (OOD)"),
                  *((c.column, c.heading) for t, c in ERROR_COLUMNS.items() if t != "qa")]


def _fmt3(v) -> str:
    """A number by the report's one rounding rule (`report.round3`)."""
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else round3(float(v))


def with_interval(row: dict, col: str) -> str:
    v = row.get(col)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    lo, hi = row.get(f"{col}_lo"), row.get(f"{col}_hi")
    if col.endswith("_var") or lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return _fmt3(v)
    return f"{_fmt3(v)} [{_fmt3(lo)}, {_fmt3(hi)}]"


# every column a report table can show, explained once: each table lists the ones it shows beneath it
COLUMN_NOTES = {
    "errors_jaccard": "Jaccard of the two models' sets of wrongly answered QA questions",
    "cls_errors_jaccard": "Jaccard of the two models' sets of misclassified examples",
    "repr_mean": "mean over points of the Jaccard of the two models' K-nearest-neighbour sets",
    "repr_var": "variance over points of that per-point Jaccard (how uneven the agreement is)",
    "ood_jaccard": "Jaccard of the two models' deep-kNN OOD sets on the challenge set",
    "chance": "the Jaccard two independent random sets of the same sizes would have",
    "mutual_knn": "mean over points of |A∩B| / K (Huh et al. 2024)",
    "cknna": "CKA restricted to mutual-neighbour pairs, unbiased HSIC (Huh et al. 2024)",
    "cka": "linear CKA of the L2-normalised vectors, biased HSIC (Kornblith et al. 2019)",
    "cka_debiased": "linear CKA with Song et al.'s unbiased HSIC",
    "difference": "the measure against the reference for X minus the same for Y (paired: same points, resamples)",
    "lo": "95% interval, low end", "hi": "95% interval, high end",
    "verdict": "larger than the noise when the interval excludes 0; set aside when the sets say little",
    "threshold": "the deep-kNN score below which a point is OOD (kept TPR of validation points above it)",
    "n_ood": "challenge points flagged OOD", "fraction_ood": "n_ood / n_test",
    "val_tpr": "validation points kept in-distribution", "auroc": "in-test vs challenge separation",
    "fpr_at_tpr": "challenge points kept at the in-test's own TPR threshold",
    "meaningful": "flags >= 5% of the challenge set and AUROC >= 0.9 (else its OOD Jaccards say little)",
    "a_subset_of_b": "every error of model i is also model j's", "frac_a_in_b": "|E_i ∩ E_j| / |E_i|",
    "frac_b_in_a": "|E_i ∩ E_j| / |E_j|",
    "best_exact": "exact match at the best no-answer threshold (official SQuAD v2)",
    "percent_change": "the accuracy lost to the attack, (before − after) / before × 100",
    "attack_success_rate": "attacked examples (correct before) that the attack flipped",
    "avg_perturbed_words_pct": "mean share of words changed in successful attacks",
    "speedup_vs_first": "the first model's p50 latency / this model's",
    "spread": "(slowest − fastest) of the interleaved rounds' medians / p50: above 0.1 the machine was busy",
    "parameters_M": "parameters in millions", "size_MB": "ONNX file size",
}


def column_notes(columns) -> str:
    """"Columns: ..." for the shown columns the registry explains (a `_mean`/`_var` column by its kind, a
    `_chance` column by chance), or ""."""
    seen, parts = set(), []
    for c in columns:
        key = c
        if c.endswith("_chance"):
            key = "chance"
        elif c.startswith("repr_") and c.endswith("_mean"):
            key = "repr_mean"
        elif c.startswith("repr_") and c.endswith("_var"):
            key = "repr_var"
        if key in COLUMN_NOTES and key not in seen:
            seen.add(key)
            parts.append(f"{key.replace('_', ' ') if key in ('repr_mean', 'repr_var', 'chance') else c} — "
                         f"{COLUMN_NOTES[key]}")
    return ("Columns: " + "; ".join(parts) + ".") if parts else ""


def agree_metrics() -> list[tuple[str, str]]:
    """`agree`'s columns: one representation phase, error lists it cannot tell QA from classification, and every
    measure of the registry (`analysis.measures.MEASURES`: their values, then their chance levels), shown when
    asked for."""
    from .measures import MEASURES

    extra = [m for m in MEASURES.values() if m.cells is not None]
    return ([("errors_jaccard", "Prediction errors"), ("repr_mean", "Representation, mean"),
             ("repr_var", "Representation, var"), ("ood_jaccard", "Data distribution (OOD)"),
             ("errors_jaccard_chance", "errors: chance"), ("ood_jaccard_chance", "OOD: chance")]
            + [m.columns[0] for m in extra] + [m.columns[1] for m in extra])


def table2_display(rows: list[dict], metrics=TABLE2_METRICS) -> tuple[list[dict], list[str], list[str]]:
    """(rows of formatted cells "J [lo, hi]", columns, headers), keeping only columns some row has."""
    present = [(c, h) for c, h in metrics if any(c in r for r in rows)]
    out = [{"model_i": r["model_i"], "model_j": r["model_j"],
            **{c: (_fmt3(r.get(c)) if c.endswith("_chance") else with_interval(r, c)) for c, _ in present}}
           for r in rows]
    for cells, r in zip(out, rows):
        if "ood_jaccard" in cells and r.get("ood_meaningful") is False:
            cells["ood_jaccard"] += " ✗ not meaningful"
        for cols in ERROR_COLUMNS.values():
            if cols.column in cells and r.get(f"{cols.column}_meaningful") is False:
                cells[cols.column] += " ✗ not meaningful"
        for c in cells:  # a mean over a draw of points says so beside the number
            basis = r.get(c[:-len("_mean")] + "_basis", "") if c.endswith("_mean") else ""
            if basis.startswith("estimated"):
                cells[c] += f" ({basis.split(' (seed')[0]})"
    return out, ["model_i", "model_j"] + [c for c, _ in present], ["Model i", "Model j"] + [h for _, h in present]


def agreement_table(names, arts: dict[str, ModelArtifacts], k: int, k_ood: int, reps: int):
    """`lookalike agree`'s table: (rows for CSV/JSON, formatted cells, columns, headers). One representation
    phase, the QA error sets' containment, and the chance levels shown beside the Jaccards."""
    rows = table2_rows(names, arts, k, k_ood, reps, phases=False, subsets=True)
    shown, shown_cols, heads = table2_display(rows, agree_metrics())
    return rows, shown, shown_cols, heads


def noise_rows(names, arts: dict[str, ModelArtifacts], k: int = 10, k_ood: int = 10, reps: int = 1000,
               measures: tuple[str, ...] = ()) -> list[dict]:
    """Paired differences against the reference (the first model): does X agree with it more than Y does, by more
    than the sampling noise? One row per metric and pair of other models; the field's other measures asked for
    (`measures`) get theirs too (mutual-kNN by paired bootstrap over points, CKNNA and CKA by a paired
    delete-a-group jackknife)."""
    ref, others = names[0], names[1:]
    R = arts[ref]
    out = []

    def add(metric, x, y, diff, lo, hi, not_meaningful: str | None = None):
        verdict = ("larger than the noise" if (lo > 0 or hi < 0) else "within the noise") if not math.isnan(lo) \
            else "no interval"
        if not_meaningful:  # never counted as a difference: the sets compared say little
            verdict = not_meaningful
        out.append({"metric": metric, "reference": ref, "model_x": x, "model_y": y, "difference": diff,
                    "lo": lo, "hi": hi, "verdict": verdict})

    for x, y in itertools.combinations(others, 2):
        X, Y = arts[x], arts[y]
        for phase in PHASES:
            if all(phase in m.knn for m in (R, X, Y)):
                d, lo, hi = paired_mean_difference(knn_jaccards(R.knn[phase], X.knn[phase], k),
                                                   knn_jaccards(R.knn[phase], Y.knn[phase], k), reps)
                add(f"representation {phase} FT (K={k})", x, y, d, lo, hi)
        for m in measures:
            for phase in PHASES:
                row = _measure_difference(m, phase, R, X, Y, k, reps)
                if row is not None:
                    add(f"{row[0]} {phase} FT", x, y, *row[1:])
        if R.ood is not None and X.ood is not None and Y.ood is not None:
            distribution_agreement(R.ood, X.ood, k_ood)
            distribution_agreement(R.ood, Y.ood, k_ood)
            r, mx, my = _members(set(R.ood.test_ids), R.ood.ood_ids(k_ood), X.ood.ood_ids(k_ood), Y.ood.ood_ids(k_ood))
            ok, why = ood_verdict({ref: R.ood, x: X.ood, y: Y.ood}, k_ood)
            add(f"OOD sets (k={k_ood})", x, y, *paired_jaccard_difference(r, mx, my, reps),
                not_meaningful=None if ok else why)
        for task, cols in ERROR_COLUMNS.items():
            er, ex, ey, label = R.errors.get(task), X.errors.get(task), Y.errors.get(task), cols.label
            if er is not None and ex is not None and ey is not None:
                universe = _error_universe(er, ex)
                _error_universe(er, ey)
                if universe is not None:
                    r, mx, my = _members(universe, er.ids, ex.ids, ey.ids)
                    why = [f"{n}: {e.degenerate}" for n, e in ((ref, er), (x, ex), (y, ey)) if e.degenerate]
                    add(label, x, y, *paired_jaccard_difference(r, mx, my, reps),
                        not_meaningful="not meaningful: " + "; ".join(why) if why else None)
    return out


def _measure_inputs(m, phase: str, *arts) -> list | None:
    """What measure `m` reads of each model at `phase` (neighbour files or opened stores), or None if one lacks it."""
    from ..core.store import open_store

    if m.needs == "knn":
        return [a.knn[phase] for a in arts] if all(phase in a.knn for a in arts) else None
    return [open_store(a.stores[phase]) for a in arts] if all(phase in a.stores for a in arts) else None


def _measure_difference(name: str, phase: str, R, X, Y, k: int, reps: int):
    """(label, difference, lo, hi) of a registry measure between (R, X) and (R, Y), or None when the artifacts it
    needs are missing."""
    from .measures import measure

    m = measure(name)
    inputs = _measure_inputs(m, phase, R, X, Y)
    if inputs is None or m.difference is None:
        return None
    return (f"{m.label} (K={k})" if m.per_k else m.label, *m.difference(*inputs, k, reps))


def subset_rows(names, arts: dict[str, ModelArtifacts]) -> list[dict]:
    rows = []
    for a, b in pairs(names):
        for task, cols in ERROR_COLUMNS.items():
            ea, eb = arts[a].errors.get(task), arts[b].errors.get(task)
            if ea is not None and eb is not None:
                e = error_agreement(ea, eb)
                rows.append({"model_i": a, "model_j": b, "task": cols.subset_task, **e})
    return rows


# --------------------------------------------------------------------------- Figure 1

@dataclass
class Curve:
    """One line of a Figure 1 panel: agreement at each K, its bootstrap 95% band, and the points the report calls
    not meaningful (drawn hollow, never joined as if they measured something)."""

    ks: list
    values: list
    lo: list = field(default_factory=list)
    hi: list = field(default_factory=list)
    not_meaningful: list = field(default_factory=list)  # bool per K
    reasons: list = field(default_factory=list)  # per K: why it is not meaningful (the verdict's words), or ""


def knn_sweep(names, arts: dict[str, ModelArtifacts], phase: str, ks, reps: int = 0) -> dict[str, Curve]:
    """{"ref vs X": Curve of mean Jaccards over K} against the first model (Figure 1 a/b), with 95% bands when
    reps > 0."""
    ref = arts[names[0]]
    curves = {}
    for n in names[1:]:
        if phase in ref.knn and phase in arts[n].knn:
            kk = [x for x in ks if x <= min(ref.knn[phase].k, arts[n].knn[phase].k)]
            per_k = [knn_jaccards(ref.knn[phase], arts[n].knn[phase], x) for x in kk]
            bands = [mean_interval(j, reps) if reps > 0 else (math.nan, math.nan) for j in per_k]
            curves[f"{names[0]} vs {n}"] = Curve(kk, [float(j.mean()) for j in per_k], [b[0] for b in bands],
                                                 [b[1] for b in bands], [False] * len(kk))
    return curves


def ood_sweep(names, arts: dict[str, ModelArtifacts], ks, reps: int = 0) -> dict[str, Curve]:
    """{"ref vs X": Curve of OOD-set Jaccards over k} (Figure 1 c): 95% bands when reps > 0, and each point whose
    OOD sets fail the meaningfulness rule (`ood_verdict`: e.g. sets of 0-1 members) marked."""
    ref = arts[names[0]]
    if ref.ood is None:
        return {}
    curves = {}
    for n in names[1:]:
        if arts[n].ood is None:
            continue
        vals, lo, hi, bad, reasons = [], [], [], [], []
        for x in ks:
            vals.append(distribution_agreement(ref.ood, arts[n].ood, x)["jaccard"])
            a, b = ref.ood.ood_ids(x), arts[n].ood.ood_ids(x)
            band = _set_ci(set(ref.ood.test_ids), a, b, reps) if reps > 0 else (math.nan, math.nan)
            lo.append(band[0])
            hi.append(band[1])
            ok, why = ood_verdict({names[0]: ref.ood, n: arts[n].ood}, x)
            bad.append(not ok)
            reasons.append("" if ok else why.removeprefix("not meaningful: "))
        curves[f"{names[0]} vs {n}"] = Curve(list(ks), vals, lo, hi, bad, reasons)
    return curves


# --------------------------------------------------------------------------- per-model tables

def ood_detail_rows(names, arts: dict[str, ModelArtifacts], k_ood: int) -> list[dict]:
    rows = []
    for n in names:
        o = arts[n].ood
        if o is not None:
            m = meaningful(o, k_ood)
            rows.append({"model": n, "threshold": o.thresholds[k_ood], "n_ood": m["n_ood"], "n_test": m["n_test"],
                         "fraction_ood": m["fraction"],
                         **{x: o.metrics[k_ood].get(x) for x in ("val_tpr", "auroc", "fpr_at_tpr")},
                         "meaningful": m["ok"]})
    return rows


def qa_rows(names, arts: dict[str, ModelArtifacts]) -> list[dict]:
    keys = ("exact", "f1", "HasAns_exact", "NoAns_exact", "best_exact", "best_f1", "total")
    return [{"model": n, **{x: arts[n].metrics["qa"].get(x) for x in keys},
             "errors": len(arts[n].errors["qa"].ids) if "qa" in arts[n].errors else None}
            for n in names if "qa" in arts[n].metrics]


def cls_rows(names, arts: dict[str, ModelArtifacts]) -> list[dict]:
    return [{"model": n, "accuracy": arts[n].metrics["cls"]["accuracy"], "total": arts[n].metrics["cls"]["total"],
             "errors": len(arts[n].errors["cls"].ids) if "cls" in arts[n].errors else None}
            for n in names if "cls" in arts[n].metrics]


TABLE3_COLUMNS = (["target", "original_accuracy", "accuracy_after_attack", "absolute_change", "percent_change",
                   "attack_success_rate", "avg_perturbed_words_pct", "avg_queries", "n"],
                  ["Target", "Original accuracy", "After-attack accuracy", "Absolute change", "% change",
                   "Success rate", "Perturbed words %", "Avg queries", "n"])


def table3_rows(names, arts: dict[str, ModelArtifacts]) -> list[dict]:
    """The paper's Table 3 columns from each target's attack summary."""
    return [{"target": n, **{c: arts[n].attack.get(c) for c in TABLE3_COLUMNS[0][1:]}}
            for n in names if arts[n].attack]


def latency_rows(names, arts: dict[str, ModelArtifacts]) -> list[dict]:
    rows = [{"model": n, "device": arts[n].latency["device"], **r} for n in names if arts[n].latency
            for r in arts[n].latency["rows"]]
    ref = {(r["batch_size"], r["seq_len"]): r["p50_ms"] for r in rows if r["model"] == names[0]}
    for r in rows:
        base = ref.get((r["batch_size"], r["seq_len"]))
        r["speedup_vs_first"] = base / r["p50_ms"] if base else None
    return rows


# --------------------------------------------------------------------------- the report

@dataclass
class ReportSpec:
    title: str
    description: str = ""
    k: int = 10
    knn_ks: tuple = (10,)
    k_ood: int = 10
    ood_ks: tuple = (10,)
    tpr: float = 0.95
    reps: int = 1000
    attack_setting: str = ""
    measures: tuple = ("jaccard",)  # representation measures beyond the paper's: a section of their own
    pooling: str = "cls"  # the vectors compared (CLS, the paper's, unless the run asked otherwise)
    notes: list[str] = field(default_factory=list)
    provenance: str = ""


def _section(rep: Report, out: Path, name: str, title: str, rows: list[dict], columns, headers=None,
             text: str = "") -> None:
    """Write a table's md/csv/json files and add it to the report under a heading."""
    write_table(rows, columns, out / name)
    rep.heading(title)
    if text:
        rep.text(text)
    rep.table(rows, columns, headers)
    notes = column_notes(columns)
    if notes:
        rep.text(notes)


@dataclass
class _Build:
    """What every report section reads and adds to: the models, their artifacts, the settings, the folder, the
    report being written and the summary."""

    names: list[str]
    arts: dict[str, ModelArtifacts]
    spec: ReportSpec
    out: Path
    rep: Report
    summary: dict
    table2: list[dict] = field(default_factory=list)

    def section(self, name: str, title: str, rows: list[dict], columns, headers=None, text: str = "",
                summary: str | None = None) -> None:
        """A table section when there are rows (none: the section is left out), recorded in the summary under
        `summary` when given."""
        if not rows:
            return
        _section(self.rep, self.out, name, title, rows, columns, headers, text)
        if summary:
            self.summary[summary] = rows


def _table1(b: _Build) -> None:
    b.section("table1_models", "Table 1: models", table1_rows(b.names, b.arts), *TABLE1_COLUMNS)


def _table2(b: _Build) -> None:
    spec, out = b.spec, b.out
    t2 = b.table2 = table2_rows(b.names, b.arts, spec.k, spec.k_ood, spec.reps)
    shown, cols, heads = table2_display(t2)
    # .json/.csv hold the numbers (with *_lo/*_hi); .md the cells as read: "J [lo, hi]"
    write_table(t2, list(dict.fromkeys(c for r in t2 for c in r)), out / "table2_agreement")
    OwnedFolder(out).write_text("table2_agreement.md", markdown_table(shown, cols, heads) + "\n")
    b.rep.heading(f"Table 2: model-pair agreement (Jaccard; K={spec.k} for representation, k={spec.k_ood} for OOD)")
    b.rep.text("Each cell: the Jaccard and its bootstrap 95% interval (over points for representation, over examples "
               f"for error and OOD sets; {spec.reps} resamples).")
    b.rep.table(shown, cols, heads)
    b.rep.text(column_notes(cols))
    b.summary["table2"] = t2


def _chance(b: _Build) -> None:
    names_ = {**{f"{c.column}_chance": c.short for c in ERROR_COLUMNS.values()}, "ood_jaccard_chance": "OOD sets"}
    chance = [{"model_i": r["model_i"], "model_j": r["model_j"], **{c: r.get(c) for c in names_}} for r in b.table2]
    shown = [c for c in names_ if any(r.get(c) is not None for r in chance)]
    if shown:
        b.section("table2_chance", "Set Jaccards by chance", chance, ["model_i", "model_j", *shown],
                  ["Model i", "Model j", *(names_[c] for c in shown)],
                  "The Jaccard two independent random sets of the same sizes would have (n_a n_b / n over "
                  "n_a + n_b - n_a n_b / n): a set Jaccard means agreement only as far as it exceeds this.")


def noise_headline(noise: list[dict], ref: str) -> str:
    """The differences table's headline, counted over the same rows the table shows: how many intervals exclude
    0, and how many of those were set aside (not meaningful) and why, so the sentence and the table agree."""
    excludes = [r for r in noise if not math.isnan(r["lo"]) and (r["lo"] > 0 or r["hi"] < 0)]
    counted = [r for r in excludes if r["verdict"] == "larger than the noise"]
    aside = [r for r in excludes if r["verdict"] != "larger than the noise"]
    text = (f"{len(excludes)} of {len(noise)} paired differences exclude 0 at 95% (m({ref}, X) - m({ref}, Y) for "
            "each measure m, on the same points and resamples)")
    if aside:
        reasons = sorted({r["verdict"].split(":")[0] for r in aside})
        text += (f"; {len(aside)} of them {'is' if len(aside) == 1 else 'are'} set aside as "
                 f"{' / '.join(reasons)} (the sets compared say little), so {len(counted)} "
                 f"{'is' if len(counted) == 1 else 'are'} counted as larger than the noise")
    return text + "."


def _differences(b: _Build) -> None:
    others = tuple(m for m in b.spec.measures if m != "jaccard")
    noise = noise_rows(b.names, b.arts, b.spec.k, b.spec.k_ood, b.spec.reps, others)
    ref = b.names[0]
    b.section("table2_differences", f"Which differences are larger than the noise (paired vs {ref})",
              noise, ["metric", "reference", "model_x", "model_y", "difference", "lo", "hi", "verdict"],
              ["Metric", "Reference", "X", "Y", "m(ref,X) - m(ref,Y)", "95% lo", "95% hi", "Verdict"],
              noise_headline(noise, ref), summary="differences")


def _subsets(b: _Build) -> None:
    b.section("error_subsets", "Error-set containment", subset_rows(b.names, b.arts),
              ["model_i", "model_j", "task", "n_a", "n_b", "intersection", "a_subset_of_b", "frac_a_in_b",
               "frac_b_in_a"], text="Is model i's error set a subset of model j's? frac_a_in_b = |E_i ∩ E_j| / |E_i|.")


def _figure1(b: _Build) -> None:
    spec, names, arts = b.spec, b.names, b.arts
    band_reps = min(spec.reps, 200)  # a band per point: 200 resamples are enough for the drawing
    figures = [("a", knn_sweep(names, arts, "before", spec.knn_ks, band_reps), "representation agreement vs K, "
                "before fine-tuning", "Data representation agreement, before fine-tuning", "mean Jaccard of K-NN sets"),
               ("b", knn_sweep(names, arts, "after", spec.knn_ks, band_reps), "representation agreement vs K, after "
                "fine-tuning", "Data representation agreement, after fine-tuning", "mean Jaccard of K-NN sets"),
               ("c", ood_sweep(names, arts, spec.ood_ks, band_reps), "OOD agreement vs K",
                "Data distribution (deep-kNN OOD) agreement", "Jaccard of OOD sets")]
    for tag, curves, heading, title, ylabel in figures:
        if curves:
            plot_sweep(curves, title, ylabel, b.out / f"figure1{tag}.png")
            b.rep.heading(f"Figure 1({tag}): {heading}")
            b.rep.image(f"figure1{tag}.png", f"Figure 1({tag})")
            hollow = [f"{c} at k={k} ({why})" for c, v in curves.items()
                      for k, why in zip(v.ks, v.reasons) if why]
            if hollow:
                b.rep.text("Hollow points are not meaningful, by the rule the OOD table uses (flags >= 5% of the "
                           "challenge set, AUROC >= 0.9): " + "; ".join(hollow) + ".")
            b.summary[f"figure1{tag}"] = {c: dict(zip(v.ks, v.values)) for c, v in curves.items()}
            b.summary[f"figure1{tag}_bands"] = {c: {"lo": v.lo, "hi": v.hi, "not_meaningful": v.not_meaningful}
                                                for c, v in curves.items()}


def _ood_detail(b: _Build) -> None:
    spec, ref = b.spec, b.arts[b.names[0]]
    b.section("ood_detail", f"Deep-kNN OOD per model (k={spec.k_ood}, TPR {spec.tpr})",
              ood_detail_rows(b.names, b.arts, spec.k_ood),
              ["model", "threshold", "n_ood", "n_test", "fraction_ood", "val_tpr", "auroc", "fpr_at_tpr", "meaningful"],
              text=f"Encoder: {ref.ood_encoder}; threshold: {ref.ood.meta.get('val', '') if ref.ood else ''}. "
              "An OOD comparison is meaningful here when the model flags at least 5% of the challenge set and "
              "separates it from held-out in-distribution data with AUROC >= 0.9.", summary="ood_detail")


def _task_metrics(b: _Build) -> None:
    b.section("qa_metrics", "Extractive QA (official SQuAD v2 metrics)", qa_rows(b.names, b.arts),
              ["model", "exact", "f1", "HasAns_exact", "NoAns_exact", "best_exact", "best_f1", "total", "errors"],
              summary="qa_metrics")
    b.section("cls_metrics", "Classification", cls_rows(b.names, b.arts), ["model", "accuracy", "total", "errors"],
              summary="cls_metrics")


def _table3(b: _Build) -> None:
    b.section("table3_attack", "Table 3: BERT-Attack", table3_rows(b.names, b.arts), *TABLE3_COLUMNS,
              text=b.spec.attack_setting, summary="table3")


def _latency(b: _Build) -> None:
    lat = latency_rows(b.names, b.arts)
    b.section("latency", "Latency per model", lat,
              ["model", "device", "batch_size", "seq_len", "p50_ms", "p90_ms", "p99_ms", "seq_per_s",
               "speedup_vs_first", *(["spread"] if any("spread" in r for r in lat) else [])])


def _how_to_read(b: _Build) -> None:
    spec, ref = b.spec, b.names[0]
    others = [m for m in spec.measures if m != "jaccard"]
    b.rep.heading("How to read this")
    b.rep.text(
        f"Every number compares a model with the reference, {ref} (the first model), on the same points. Agreement "
        f"is a Jaccard in [0, 1]: of the questions each model gets wrong (prediction errors), of each point's "
        f"K={spec.k} nearest neighbours (data representation, a mean over points), and of the points each model "
        f"calls out-of-distribution at k={spec.k_ood} (data distribution)"
        + (f"; beside it the field's other measures ({', '.join(others)})" if others else "")
        + f". A cell reads \"value [95% interval]\" ({spec.reps} resamples); 1 means the same behaviour, and a "
        "set Jaccard means agreement only as far as it exceeds its chance level (its own table). \"Larger than the "
        "noise\" means the paired difference between two models' agreement with the reference excludes 0. A value "
        "marked ✗ not meaningful compares sets that say little (an OOD detector that flags almost nothing or does "
        "not separate the data, a classifier collapsed onto one class) and is never counted. Estimated values say "
        f"how many points they were estimated from; the rest are exhaustive. The vectors compared use "
        f"{'CLS pooling (the paper' + chr(39) + 's)' if spec.pooling == 'cls' else spec.pooling + ' pooling'}.")


def machine_provenance() -> str:
    """The machine and software that made the numbers: CPU and ISA, package versions, lookalike's version and
    commit (when it runs from a git checkout)."""
    import importlib.metadata as md
    import subprocess

    from .._version import __version__
    from ..core.cpu import cpu_info

    cpu = cpu_info()
    versions = []
    for pkg in ("numpy", "onnxruntime", "faiss-cpu", "transformers", "torch", "h5py"):
        try:
            versions.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            continue
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or "not a git checkout"
    except (OSError, subprocess.SubprocessError):
        commit = "not a git checkout"
    import os

    return (f"Machine: {cpu['model']} ({os.cpu_count()} cores; ISA {', '.join(cpu['isa']) or 'baseline'}; int8 "
            f"class {cpu['int8_class']}). Software: lookalike {__version__} (commit {commit}), "
            + ", ".join(versions) + ".")


def _provenance(b: _Build) -> None:
    b.rep.heading("Provenance")
    if b.spec.provenance:
        b.rep.text(b.spec.provenance)
    b.rep.text(machine_provenance())
    b.summary["machine"] = machine_provenance()


# the report, in order: each section writes its tables and adds itself to the report when it has something to show
def measure_rows(names, arts: dict[str, ModelArtifacts], measures, k: int, reps: int) -> list[dict]:
    """The reference (first model) against each other model, per phase: every asked measure beyond the Jaccard
    with its interval, chance level and basis (analysis.measures)."""
    from .measures import measure

    extra = [measure(m) for m in measures if m != "jaccard"]
    ref, rows = names[0], []
    for name in names[1:]:
        R, X = arts[ref], arts[name]
        for phase in PHASES:
            row: dict = {"reference": ref, "model": name, "phase": f"{phase} FT"}
            for m in extra:
                inputs = _measure_inputs(m, phase, R, X)
                if inputs is not None:
                    row.update(m.cells(*inputs, k, reps, 0))
            if len(row) > 3:
                rows.append(row)
    return rows


def _other_measures(b: _Build) -> None:
    """"Representation, other measures": left out unless the experiment asked for a measure beyond the Jaccard."""
    from .measures import MEASURES

    asked = [m for m in b.spec.measures if m != "jaccard"]
    if not asked:
        return
    rows = measure_rows(b.names, b.arts, asked, b.spec.k, b.spec.reps)
    if not rows:
        return
    shown = [{"reference": r["reference"], "model": r["model"], "phase": r["phase"],
              **{m: (with_interval(r, m) if m in r else "—") for m in asked},
              **{f"{m}_chance": _fmt3(r.get(f"{m}_chance")) for m in asked}} for r in rows]
    cols = ["reference", "model", "phase", *asked, *(f"{m}_chance" for m in asked)]
    heads = ["Reference", "Model", "Phase", *(MEASURES[m].label for m in asked),
             *(f"{MEASURES[m].label}: chance" for m in asked)]
    write_table(rows, list(dict.fromkeys(c for r in rows for c in r)), b.out / "representation_measures")
    b.rep.heading("Representation, other measures")
    b.rep.text("The reference against each model by the field's other representation measures, on the same points "
               "as Table 2 (K=%d), each with its 95%% interval and the level a row-permuted partner reaches: %s. CKA "
               "is global, dominated by the directions of largest variance; the kNN Jaccard and mutual-kNN are local "
               "(who is near whom); CKNNA is CKA restricted to mutual-neighbour pairs." % (
                   b.spec.k, "; ".join(f"{MEASURES[m].label} = {MEASURES[m].what}" for m in asked)))
    b.rep.table(shown, cols, heads)
    b.summary["representation_measures"] = rows
    _measure_figure(b, rows, asked)


def _measure_figure(b: _Build, rows: list[dict], asked: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .measures import MEASURES
    from .report import save_figure

    labels = [f"{r['model']}\n{r['phase']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(rows)), 3.6))
    width = 0.8 / len(asked)
    for i, m in enumerate(asked):
        xs = [j + (i - (len(asked) - 1) / 2) * width for j in range(len(rows))]
        vals = [r.get(m, math.nan) for r in rows]
        err = [[max(0.0, v - r.get(f"{m}_lo", v)) for v, r in zip(vals, rows)],
               [max(0.0, r.get(f"{m}_hi", v) - v) for v, r in zip(vals, rows)]]
        ax.bar(xs, vals, width, yerr=err, capsize=2, label=MEASURES[m].label)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel(f"agreement with {rows[0]['reference']}")
    ax.set_ylim(min(0, *(r.get(m, 0) for r in rows for m in asked)), 1.05)
    ax.legend(fontsize=7)
    ax.set_title("Representation agreement by measure (95% intervals)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, b.out / "figure_measures.png")
    plt.close(fig)
    b.rep.image("figure_measures.png", "Representation agreement by measure")


SECTIONS = (_how_to_read, _table1, _table2, _other_measures, _chance, _differences, _subsets, _figure1, _ood_detail, _task_metrics,
            _table3, _latency, _provenance)


def write_report(names, arts: dict[str, ModelArtifacts], spec: ReportSpec, out: Path) -> dict:
    """Write every table (md/csv/json), the figures and report.md/.html into `out`, section by section
    (SECTIONS); return the summary (the run adds its timings and writes summary.json once)."""
    rep = Report(spec.title)
    for text in ([spec.description] if spec.description else []) + spec.notes:
        rep.text(text)
    build = _Build(list(names), arts, spec, out, rep, {"models": names, "k": spec.k, "k_ood": spec.k_ood,
                                                       "attack_setting": spec.attack_setting,
                                                       "pooling": spec.pooling})
    for section in SECTIONS:
        section(build)
    rep.write(out)
    return build.summary
