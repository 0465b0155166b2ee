"""Why deep-kNN OOD over NewsQA is not meaningful in the offline shared-data experiment: the diagnostics.

The paper's bank is all of SQuAD v2 train (442 articles); offline there are its first 10 articles. This script
takes the experiment's MiniLM stores (runs/shared, QA-fine-tuned encoder, CLS) and measures deep-kNN (k = 1, 10,
50, TPR 95%) for: the experiment's setting (bank: SQuAD train subset, in-distribution test: the SQuAD v2 dev half,
challenge: NewsQA dev); a wider bank (train subset + 8 of the 16 dev articles, tested on the other 8); a
same-article control (bank and test: alternating questions of the dev half); the pre-trained encoder and mean
pooling on quarter samples; and CUAD (legal contracts) as the challenge instead of NewsQA.
Writes benchmarks/results/shared-ood-diagnosis.json.

    python benchmarks/bench_shared_ood.py [--run runs/shared]
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED, save, work_dir  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(ROOT / "runs" / "shared"))
    args = ap.parse_args()
    from lookalike.analysis.ood import deep_knn_ood, meaningful
    from lookalike.data import CorpusSpec
    from lookalike.engine import embed, open_store
    from lookalike.params import EmbedParams

    steps = Path(args.run) / "steps"

    def store(role):
        return open_store(glob.glob(str(steps / "embed" / f"MiniLM-L6-after-{role}-*" / "store"))[0])

    def summary(r, ks=(1, 10, 50)):
        m = meaningful(r, 10)
        return {"auroc": {k: round(r.metrics[k]["auroc"], 4) for k in ks if k in r.metrics},
                "flagged_k10": m["n_ood"], "n_test": m["n_test"], "meaningful": m["ok"], "reason": m["reason"],
                "in_test_tpr_at_val_threshold": r.metrics[10].get("in_test_tpr_at_val_threshold")}

    train, news, dev = store("ood_train"), store("ood_test"), store("representation")
    X = {"train": train.embeddings(), "news": news.embeddings(), "dev": dev.embeddings()}
    out = {"encoder": "MiniLM-L6 QA-fine-tuned (experiment's), CLS unless stated", "k": [1, 10, 50]}
    out["experiment_setting"] = summary(deep_knn_ood(X["train"], X["news"], [1, 10, 50], in_test=X["dev"]))
    article = {}
    squad = json.loads((SHARED / "squad2" / "cs224n-dev-v2.0.json").read_text())
    for a, art in enumerate(squad["data"]):
        for p in art["paragraphs"]:
            for q in p["qas"]:
                article[q["id"]] = a
    arts = np.array([article[i] for i in dev.ids])
    even = np.isin(arts, np.arange(0, len(squad["data"]), 2))
    out["wider_bank_18_articles"] = summary(deep_knn_ood(np.concatenate([X["train"], X["dev"][even]]), X["news"],
                                                         [1, 10, 50], in_test=X["dev"][~even]))
    rows = np.arange(len(dev.ids))
    out["same_article_control"] = summary(deep_knn_ood(X["dev"][rows % 2 == 0], X["news"], [1, 10, 50],
                                                       in_test=X["dev"][rows % 2 == 1]))
    work = work_dir("lookalike-ood-diag-")
    encoders = {"after": glob.glob(str(steps / "export" / "MiniLM-L6-encoder-*" / "model"))[0],
                "before": glob.glob(str(steps / "export" / "MiniLM-L6-base-*" / "model"))[0]}
    samples = {"train": CorpusSpec(SHARED / "squad2" / "train-v2.0-first10.json", every=4),
               "news": CorpusSpec(SHARED / "newsqa" / "newsqa_dev_robustqa.json", every=4),
               "dev": CorpusSpec(SHARED / "squad2" / "cs224n-dev-v2.0.json", every=6)}
    for enc, pooling in (("after", "mean"), ("before", "mean"), ("before", "cls")):
        st = {}
        for k, spec in samples.items():
            embed(encoders[enc], spec, work / f"{enc}-{pooling}-{k}", EmbedParams(max_length=256, pooling=pooling),
                  progress=False)
            st[k] = open_store(work / f"{enc}-{pooling}-{k}")
        out[f"sample_{enc}_{pooling}"] = summary(deep_knn_ood(st["train"], st["news"], [1, 10, 50], in_test=st["dev"]))
    embed(encoders["after"], CorpusSpec(SHARED / "cuad500"), work / "cuad", EmbedParams(max_length=256),
          progress=False)
    out["cuad_instead_of_newsqa"] = summary(deep_knn_ood(X["train"], open_store(work / "cuad"), [1, 10, 50],
                                                         in_test=X["dev"]))
    print(json.dumps(out, indent=1))
    save("shared-ood-diagnosis", out)


if __name__ == "__main__":
    main()
