"""Fine-tuning, predictions and BERT-Attack end to end on ../shared/data (not in CI: ~15 minutes on 2 cores).

Runs examples/shared-data.yaml: the packaged MiniLM fine-tuned for sentiment on one deterministic half of
imdb_1k.tsv (every 2nd review, offset 0) and for QA on one half of squad2_dev500 (answer_start recovered by
locating the answer text), evaluated on the other halves; its int8 and layer-dropped variants; BERT-Attack
with the offline `minilm-mlm`. Extracts accuracy, EM/F1, timings and Table 3 into
benchmarks/results/shared-experiment.json.

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "runs" / "shared"))
    args = ap.parse_args()
    from lookalike.experiment import run_experiment

    t0 = time.perf_counter()
    report = run_experiment(ROOT / "examples" / "shared-data.yaml", args.out, echo=print)
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    finetunes = {}
    for info in (out / "steps" / "finetune").glob("*/model/lookalike-finetune.json"):
        d = json.loads(info.read_text())
        finetunes[info.parent.parent.name] = {k: d[k] for k in ("task", "n_records", "n_features", "epochs",
                                                                   "train_loss", "train_seconds")}
    qa = json.loads((report / "qa_metrics.json").read_text()) if (report / "qa_metrics.json").exists() else []
    t3 = json.loads((report / "table3_attack.json").read_text()) if (report / "table3_attack.json").exists() else []
    cls = {}
    for d in (out / "steps" / "predict").glob("*-cls-*"):
        cls[d.name] = json.loads((d / "metrics.json").read_text())["accuracy"]
    t2 = json.loads((report / "table2_agreement.json").read_text())
    save("shared-experiment", {"seconds_total": seconds, "finetune": finetunes, "qa_metrics": qa,
                               "cls_accuracy_heldout_half": cls, "table3": t3, "table2": t2,
                               "report": str(report / "report.md")})


if __name__ == "__main__":
    main()
