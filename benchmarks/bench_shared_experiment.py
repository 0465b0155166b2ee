"""The paper's comparison on the paper's datasets, offline: examples/shared-data.yaml end to end (not in CI:
about 2-3 hours on 2 cores; re-runs reuse every finished step).

MiniLM fine-tuned for QA on the SQuAD v2 train subset and for sentiment on the IMDB train sample; its int8 and
layer-dropped variants; errors on the SQuAD v2 dev half (official scoring) and the IMDB test sample;
representation on the SQuAD v2 dev half; deep-kNN OOD with NewsQA dev as the challenge set; BERT-Attack on 200
IMDB test reviews with a fitted offline MLM head. Writes benchmarks/results/shared-experiment.json: per-step
times, EM/F1 and accuracy per model, Tables 2 (with intervals) and 3, the noise verdicts, OOD detail, the MLM's
quality, and the measured rates that extrapolate to the paper's full setting.

    python benchmarks/bench_shared_experiment.py [--out runs/shared]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, save  # noqa: E402


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "runs" / "shared"))
    ap.add_argument("--config", default=str(ROOT / "examples" / "shared-data.yaml"))
    ap.add_argument("--note", action="append", default=[],
                    help="a fact about this run the files cannot show (e.g. a pause), kept in the results")
    args = ap.parse_args()
    from lookalike.experiment import run_experiment

    t0 = time.perf_counter()
    report = run_experiment(args.config, args.out, echo=lambda s: print(s, flush=True))
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    steps = {}
    for done in sorted((out / "steps").glob("*/*/.done.json")):
        d = json.loads(done.read_text())
        steps.setdefault(d["step"], {})[d["label"]] = d["seconds"]
    finetunes = {}
    for info in (out / "steps" / "finetune").glob("*/model/lookalike-finetune.json"):
        d = json.loads(info.read_text())
        finetunes[info.parent.parent.name] = {k: d.get(k) for k in ("task", "n_records", "n_features", "epochs",
                                                                       "max_length", "keep_layers", "train_loss",
                                                                       "train_seconds")}
        finetunes[info.parent.parent.name]["features_per_s"] = d["n_features"] * d["epochs"] / d["train_seconds"]
    attacks = {}
    for s in (out / "steps" / "attack").glob("*/summary.json"):
        d = json.loads(s.read_text())
        run_n = d.get("attacked_this_run", d["n"])  # a resumed attack timed only what it attacked
        attacks[s.parent.name] = {"n": d["n"], "attacked_this_run": run_n, "seconds": d["seconds_this_run"],
                                  "seconds_per_example": d["seconds_this_run"] / run_n if run_n else None,
                                  "target_queries_per_s": d["queries_per_s"]}
    mlm = next((_load(p) for p in (out / "steps" / "fit_mlm").glob("*/mlm/lookalike-mlm.json")), None)
    summary = _load(report / "summary.json") or {}
    save("shared-experiment", {
        "config": str(Path(args.config).relative_to(ROOT)) if Path(args.config).is_relative_to(ROOT) else args.config,
        "seconds_this_run": round(seconds, 1), "step_seconds": steps, "finetune": finetunes,
        "qa_metrics": summary.get("qa_metrics"), "cls_metrics": summary.get("cls_metrics"),
        "table2": summary.get("table2"), "differences": summary.get("differences"),
        "ood_detail": summary.get("ood_detail"), "table3": summary.get("table3"), "attack_rates": attacks,
        "mlm": {k: mlm.get(k) for k in ("fit_texts", "fit_positions", "eval_positions", "fill_mask_accuracy",
                                        "untrained_head_accuracy", "seconds")} if mlm else None,
        "figure1": {k: summary.get(k) for k in ("figure1a", "figure1b", "figure1c")},
        "report": str(report / "report.md"), "notes": args.note})


if __name__ == "__main__":
    main()
