"""Does more QA training data teach a layer-dropped MiniLM to extract answers? (#22's optional item)

The shared experiment fine-tunes on the 10 SQuAD v2 train articles (4,719 questions). Its L3 and L2 models answer
"no answer" almost always (HasAns EM 2.9 and 1.9). This run adds `--n` questions drawn stratified (seed 0) from the
other 432 articles of SQuAD train (`../shared/data/squad1_train`, answerable), fine-tunes the layer-dropped model
with the shared recipe (1 epoch, 256 tokens, stride 96, batch 16, lr 1e-4), and scores it on the SQuAD v2 dev half.
Steps whose output exists in `--work` are reused. Writes benchmarks/results/qa-more-data-<label>.json.

    python benchmarks/bench_qa_more_data.py [--n 5000] [--keep-layers 1,3,5] [--work runs/qa-more]
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, save  # noqa: E402

RECIPE = ["--epochs", "1", "--max-length", "256", "--doc-stride", "96", "--batch-size", "16", "--learning-rate", "1e-4"]


def mixed_train_set(n: int, seed: int, out: Path) -> dict:
    """The 10 SQuAD v2 train articles plus `n` answerable questions, the same share of every other article."""
    from lookalike.data.sample import stratified_positions

    v2 = json.loads((SHARED / "squad2" / "train-v2.0-first10.json").read_text())
    v1 = json.loads(gzip.open(SHARED / "squad1_train" / "train-v1.1-explorer.json.gz").read())
    titles = {a["title"] for a in v2["data"]}
    rest = [a for a in v1["data"] if a["title"] not in titles]
    qas = [[(pi, q) for pi, p in enumerate(a["paragraphs"]) for q in p["qas"]] for a in rest]
    data, added = list(v2["data"]), 0
    for art, aq, pick in zip(rest, qas, stratified_positions([len(q) for q in qas], n, seed)):
        paras: dict = {}
        for i in pick:
            pi, q = aq[i]
            paras.setdefault(pi, []).append({**q, "is_impossible": False})
            added += 1
        data.append({"title": art["title"], "paragraphs": [{"context": art["paragraphs"][pi]["context"], "qas": qs}
                                                           for pi, qs in sorted(paras.items())]})
    out.write_text(json.dumps({"version": f"v2.0 first10 + {added} stratified SQuAD train questions", "data": data}))
    return {"first10_questions": sum(len(p["qas"]) for a in v2["data"] for p in a["paragraphs"]),
            "added_questions": added, "added_from_articles": len(rest), "seed": seed}


def step(done: Path, cmd: list[str], log: Path) -> float:
    """Run `lookalike ...` unless `done` exists; its seconds (0 when reused)."""
    if done.exists():
        return 0.0
    t = time.perf_counter()
    with open(log, "w") as fh:
        subprocess.run(["lookalike", "-q", *cmd], check=True, stdout=fh, stderr=subprocess.STDOUT)
    return round(time.perf_counter() - t, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000, help="questions added from the other articles")
    ap.add_argument("--keep-layers", default="1,3,5")
    ap.add_argument("--work", default="runs/qa-more")
    args = ap.parse_args()
    label = "L" + str(len(args.keep_layers.split(",")))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train = work / "train-mixed.json"
    fresh = work / "train-mixed.new.json"
    data = mixed_train_set(args.n, 0, fresh)
    if train.exists():  # a finished run's file: reused only when it holds the same questions
        if json.loads(train.read_text())["data"] != json.loads(fresh.read_text())["data"]:
            raise SystemExit(f"{train} is not the training set this run would make; use another --work")
        fresh.unlink()
        data["file"] = f"{train} (reused: the same articles and questions)"
    else:
        fresh.replace(train)
    model, onnx, pred = work / f"qa-{label}-more", work / f"qa-{label}-more-onnx", work / f"pred-{label}-more"
    seconds = {
        "finetune": step(model / "lookalike-finetune.json", ["finetune", "minilm", str(train), str(model), "--task",
                         "qa", *RECIPE, "--keep-layers", args.keep_layers], work / "ft.log"),
        "export": step(onnx / "lookalike.json", ["export", str(model), str(onnx), "--task", "question-answering"],
                       work / "exp.log"),
        "predict": step(pred / "metrics.json", ["predict", str(onnx), str(SHARED / "squad2" / "cs224n-dev-v2.0.json"),
                                                str(pred), "--task", "qa", "--max-length", "256", "--doc-stride", "96"],
                        work / "pred.log"),
    }
    ft = json.loads((model / "lookalike-finetune.json").read_text())
    metrics = json.loads((pred / "metrics.json").read_text())
    shared = json.loads((Path(__file__).resolve().parent / "results" / "shared-experiment.json").read_text())
    before = next((m for m in shared["qa_metrics"] if m["model"] == f"MiniLM {label}"), None)
    save(f"qa-more-data-{label}", {
        "keep_layers": args.keep_layers, "train_set": data, "n_records": ft["n_records"],
        "n_features": ft["n_features"], "train_loss": ft["train_loss"], "train_seconds": ft["train_seconds"],
        "features_per_s": ft["n_features"] / ft["train_seconds"], "seconds_this_run": seconds,
        "dev_half": {k: metrics[k] for k in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "best_exact",
                                             "total") if k in metrics},
        "shared_experiment_4719_questions": before})


if __name__ == "__main__":
    main()
