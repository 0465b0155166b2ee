"""The paper's tables and figures from an experiment's stored artifacts (Table 1, 2, 3 and Figure 1)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .agreement import distribution_agreement, error_agreement, pairs, representation_agreement
from .knn import load_knn
from .ood import load_ood
from .report import Report, dump_json, plot_sweep, write_table


def _load_errors(pred_dir: Path) -> set[str]:
    return set(json.loads((pred_dir / "errors.json").read_text())["error_ids"])


def build_report(exp, names: list[str], out: Path, seconds: float | None = None) -> Path:
    """Write Table 1/2/3, Figure 1 (a)(b)(c), latency and the report into `out`."""
    art = exp.artifacts
    knn_p = exp.steps.get("knn") or {}
    ood_p = exp.steps.get("ood") or {}
    k = int(knn_p.get("k", 10))
    k_ood = int(ood_p.get("k", 10))
    knn_sweep = sorted(set(knn_p.get("sweep", [k])) | {k})
    ood_sweep = sorted(set(ood_p.get("sweep", [k_ood])) | {k_ood})
    rep = Report(exp.cfg.get("title", "lookalike: do the compressed models behave like the large one?"))
    if exp.cfg.get("description"):
        rep.text(exp.cfg["description"])
    summary: dict = {"models": names, "k": k, "k_ood": k_ood}

    # Table 1: the models
    t1 = []
    for n in names:
        m = art[n].get("manifest")
        if m:
            t1.append({"model": n, "layers": m["num_layers"], "parameters_M": round(m["parameters"] / 1e6, 2),
                       "embedding_dim": m["hidden_size"], "size_MB": round(m["file_size"] / 1e6, 1),
                       "variant": m["variant"]["description"], "source": m["source"]["model"].split("/")[-1]
                       if "site-packages" in m["source"]["model"] else m["source"]["model"]})
    cols1 = ["model", "layers", "parameters_M", "embedding_dim", "size_MB", "variant", "source"]
    write_table(t1, cols1, out / "table1_models")
    rep.heading("Table 1: models")
    rep.table(t1, cols1, ["Model", "Layers", "Parameters (M)", "Embedding dim", "ONNX size (MB)", "Variant", "Source"])

    # Table 2: pairwise agreement
    loaded = {n: {key: load_knn(art[n][key]) for key in ("knn_before", "knn_after") if key in art[n]} for n in names}
    oods = {n: load_ood(art[n]["ood"]) for n in names if "ood" in art[n]}
    errors = {n: _load_errors(art[n]["predict_qa"]) for n in names if "predict_qa" in art[n]}
    cls_errors = {n: _load_errors(art[n]["predict_cls"]) for n in names if "predict_cls" in art[n]}
    t2, subset_rows = [], []
    for a, b in pairs(names):
        row = {"model_i": a, "model_j": b}
        if a in errors and b in errors:
            e = error_agreement(errors[a], errors[b])
            row["errors_jaccard"] = e["jaccard"]
            subset_rows.append({"model_i": a, "model_j": b, "task": "qa", **e})
        if a in cls_errors and b in cls_errors:
            e = error_agreement(cls_errors[a], cls_errors[b])
            row["cls_errors_jaccard"] = e["jaccard"]
            subset_rows.append({"model_i": a, "model_j": b, "task": "sentiment", **e})
        for phase in ("before", "after"):
            key = f"knn_{phase}"
            if key in loaded[a] and key in loaded[b]:
                r = representation_agreement(loaded[a][key], loaded[b][key], k)
                row[f"repr_{phase}_mean"], row[f"repr_{phase}_var"] = r["mean"], r["variance"]
        if a in oods and b in oods:
            row["ood_jaccard"] = distribution_agreement(oods[a], oods[b], k_ood)["jaccard"]
        t2.append(row)
    cols2 = ["model_i", "model_j", "errors_jaccard", "repr_before_mean", "repr_before_var", "repr_after_mean",
             "repr_after_var", "ood_jaccard"]
    heads2 = ["Model i", "Model j", "Prediction errors (QA)", "Repr. before FT mean", "Repr. before FT var",
              "Repr. after FT mean", "Repr. after FT var", "Data distribution (OOD)"]
    if cls_errors:  # beyond the paper: the same error-set Jaccard for the sentiment models
        cols2.append("cls_errors_jaccard")
        heads2.append("Prediction errors (sentiment)")
    write_table(t2, cols2, out / "table2_agreement")
    rep.heading(f"Table 2: model-pair agreement (Jaccard; K={k} for representation, k={k_ood} for OOD)")
    rep.table(t2, cols2, heads2)
    summary["table2"] = t2
    if subset_rows:
        cols = ["model_i", "model_j", "task", "n_a", "n_b", "intersection", "a_subset_of_b", "frac_a_in_b",
                "frac_b_in_a"]
        write_table(subset_rows, cols, out / "error_subsets")
        rep.heading("Error-set containment")
        rep.text("Is model i's error set a subset of model j's? frac_a_in_b = |E_i ∩ E_j| / |E_i|.")
        rep.table(subset_rows, cols)

    # Figure 1: K sweeps against the first (large) model
    first = names[0]
    for tag, key, title in (("a", "knn_before", "before fine-tuning"), ("b", "knn_after", "after fine-tuning")):
        curves = {}
        for n in names[1:]:
            if key in loaded[first] and key in loaded[n]:
                ks = [x for x in knn_sweep if x <= loaded[n][key].k]
                curves[f"{first} vs {n}"] = (ks, [representation_agreement(loaded[first][key], loaded[n][key], x)["mean"]
                                                  for x in ks])
        if curves:
            plot_sweep(curves, f"Data representation agreement, {title}", "mean Jaccard of K-NN sets",
                       out / f"figure1{tag}.png")
            rep.heading(f"Figure 1({tag}): representation agreement vs K, {title}")
            rep.image(f"figure1{tag}.png", f"Figure 1({tag})")
            summary[f"figure1{tag}"] = {c: dict(zip(*v)) for c, v in curves.items()}
    if first in oods:
        curves = {f"{first} vs {n}": (ood_sweep, [distribution_agreement(oods[first], oods[n], x)["jaccard"]
                                                  for x in ood_sweep]) for n in names[1:] if n in oods}
        if curves:
            plot_sweep(curves, "Data distribution (deep-kNN OOD) agreement", "Jaccard of OOD sets",
                       out / "figure1c.png")
            rep.heading("Figure 1(c): OOD agreement vs K")
            rep.image("figure1c.png", "Figure 1(c)")
            summary["figure1c"] = {c: dict(zip(*v)) for c, v in curves.items()}
        od = []
        for n in names:
            if n in oods:
                o = oods[n]
                od.append({"model": n, "threshold": o.thresholds[k_ood], "n_ood": int(o.ood_mask(k_ood).sum()),
                           "n_test": len(o.test_ids), **{m: o.metrics[k_ood].get(m) for m in ("auroc", "fpr_at_tpr", "val_tpr")}})
        cols = ["model", "threshold", "n_ood", "n_test", "val_tpr", "auroc", "fpr_at_tpr"]
        write_table(od, cols, out / "ood_detail")
        rep.heading(f"Deep-kNN OOD per model (k={k_ood}, TPR {ood_p.get('tpr', 0.95)})")
        rep.text(f"Encoder: {art[first].get('ood_encoder', '')}; threshold: {oods[first].meta.get('val', '')}.")
        rep.table(od, cols)

    # QA / classification metrics
    qa_rows = []
    for n in names:
        if "predict_qa" in art[n]:
            m = json.loads((art[n]["predict_qa"] / "metrics.json").read_text())
            qa_rows.append({"model": n, **{x: m.get(x) for x in ("exact", "f1", "total", "HasAns_exact", "NoAns_exact",
                                                                   "best_exact", "best_f1")},
                            "errors": len(errors[n])})
    if qa_rows:
        cols = ["model", "exact", "f1", "HasAns_exact", "NoAns_exact", "best_exact", "best_f1", "total", "errors"]
        write_table(qa_rows, cols, out / "qa_metrics")
        rep.heading("Extractive QA (official SQuAD v2 metrics)")
        rep.table(qa_rows, cols)
    cls_rows = []
    for n in names:
        if "predict_cls" in art[n]:
            m = json.loads((art[n]["predict_cls"] / "metrics.json").read_text())
            cls_rows.append({"model": n, "accuracy": m["accuracy"], "total": m["total"], "errors": len(cls_errors[n])})
    if cls_rows:
        cols = ["model", "accuracy", "total", "errors"]
        write_table(cls_rows, cols, out / "cls_metrics")
        rep.heading("Sentiment classification")
        rep.table(cls_rows, cols)

    # Table 3: attack
    t3 = []
    for n in names:
        if "attack" in art[n]:
            s = json.loads((art[n]["attack"] / "summary.json").read_text())
            t3.append({"target": n, **s})
    if t3:
        cols = ["target", "original_accuracy", "accuracy_after_attack", "absolute_change", "percent_change",
                "attack_success_rate", "avg_perturbed_words_pct", "avg_queries", "n"]
        write_table(t3, cols, out / "table3_attack")
        rep.heading("Table 3: BERT-Attack")
        rep.text(t3[0].get("setting", ""))
        rep.table(t3, cols, ["Target", "Original accuracy", "After-attack accuracy", "Absolute change", "% change",
                             "Success rate", "Perturbed words %", "Avg queries", "n"])

    # latency per model
    lat = []
    for n in names:
        if "latency" in art[n]:
            d = json.loads(Path(art[n]["latency"]).read_text())
            for r in d["rows"]:
                lat.append({"model": n, "device": d["device"], **r})
    if lat:
        ref = {(r["batch_size"], r["seq_len"]): r["p50_ms"] for r in lat if r["model"] == first}
        for r in lat:
            base = ref.get((r["batch_size"], r["seq_len"]))
            r["speedup_vs_first"] = base / r["p50_ms"] if base else None
        cols = ["model", "device", "batch_size", "seq_len", "p50_ms", "p90_ms", "p99_ms", "seq_per_s", "speedup_vs_first"]
        write_table(lat, cols, out / "latency")
        rep.heading("Latency per model")
        rep.table(lat, cols)

    rep.heading("Provenance")
    rep.text(f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
             + (f" in {seconds:.0f} s" if seconds is not None else "") + f"; steps run: {len(exp.cache.ran)}, "
             f"reused from cache: {len(exp.cache.skipped)}. Artifacts under {exp.out / 'steps'}.")
    summary["seconds"] = seconds
    dump_json(summary, out / "summary.json")
    rep.write(out)
    return out
