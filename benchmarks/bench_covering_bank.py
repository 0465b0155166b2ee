"""Deep-kNN OOD over NewsQA with a bank that covers SQuAD's 442 training articles, beside the 10-article bank.

The bank: a stratified sample of SQuAD 1.1 train (`../shared/data/squad1_train/train-v1.1-explorer.json.gz`,
all 442 articles), the same share of every article's questions (seed 0), as question + context pairs exactly
like the in-distribution test (the SQuAD v2 dev half) and the challenge set (NewsQA dev). Beside it, the bank
of the 10 SQuAD v2 train articles the shared experiment used. For each encoder: AUROC (dev half vs NewsQA),
the fraction of NewsQA flagged at TPR 95%, the report's meaningfulness verdict, and the k sweep (Figure 1(c)).

    python benchmarks/bench_covering_bank.py [--bank 20000] [--encoders minilm-cls,minilm-mean]

Encoders are exports of the packaged MiniLM (pre-trained; `--export DIR=NAME` adds others, e.g. a QA-fine-tuned
export). Writes benchmarks/results/covering-bank.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, save  # noqa: E402

KS = (1, 5, 10, 20, 50, 100)


def stratified_bank(n: int, seed: int, out: Path) -> dict:
    """A JSONL of about n question + context pairs, the same share of every article's questions."""
    data = json.loads(gzip.open(SHARED / "squad1_train" / "train-v1.1-explorer.json.gz").read())["data"]
    total = sum(len(p["qas"]) for a in data for p in a["paragraphs"])
    rng = np.random.default_rng(seed)
    rows, per_article = [], []
    for art in data:
        qas = [(q, p["context"]) for p in art["paragraphs"] for q in p["qas"]]
        take = max(1, round(len(qas) * n / total))
        for i in sorted(rng.choice(len(qas), size=min(take, len(qas)), replace=False)):
            q, ctx = qas[i]
            rows.append({"id": q["id"], "text": q["question"], "pair": ctx})  # as the SQuAD reader makes them
        per_article.append(min(take, len(qas)))
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"articles": len(data), "questions_in_train": total, "bank_questions": len(rows), "seed": seed,
            "per_article_min": min(per_article), "per_article_max": max(per_article)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bank", type=int, default=20000, help="questions in the covering bank")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--encoders", default="minilm-cls", help="minilm-cls, minilm-mean (pre-trained MiniLM)")
    ap.add_argument("--export", action="append", default=[], help="DIR=NAME: another feature-extraction export")
    ap.add_argument("--limit-test", type=int, default=None, help="records of the dev half and NewsQA (all)")
    ap.add_argument("--dry-run", action="store_true", help="a tiny run to check the script (300-question bank)")
    ap.add_argument("--name", default="covering-bank", help="results file name [covering-bank]")
    args = ap.parse_args()
    if args.dry_run:
        args.bank, args.limit_test = 300, 150

    from lookalike.analysis.ood import deep_knn_ood, meaningful
    from lookalike.data import CorpusSpec
    from lookalike.engine import embed, open_store
    from lookalike.exporters import export
    from lookalike.models import minilm_path
    from lookalike.params import EmbedParams

    work = Path(tempfile.mkdtemp(prefix="lookalike-bank-"))
    os.environ["LOOKALIKE_CACHE"] = str(work / "cache")
    t0 = time.perf_counter()
    bank_info = stratified_bank(args.bank, 0, work / "bank.jsonl")
    corpora = {
        "bank_442": CorpusSpec(work / "bank.jsonl", pair_field="pair"),
        "bank_10": CorpusSpec(SHARED / "squad2" / "train-v2.0-first10.json", limit=300 if args.dry_run else None),
        "dev_half": CorpusSpec(SHARED / "squad2" / "cs224n-dev-v2.0.json", limit=args.limit_test),
        "newsqa": CorpusSpec(SHARED / "newsqa" / "newsqa_dev_robustqa.json", limit=args.limit_test),
    }
    exports = {}
    encoders = [e for e in args.encoders.split(",") if e]
    if encoders:
        export(str(minilm_path()), work / "minilm")
    for e in encoders:
        exports[e] = (work / "minilm", e.split("-")[1])
    for spec in args.export:
        d, name = spec.split("=")
        exports[name] = (Path(d), "cls")
    results = {"bank": bank_info, "encoders": {}, "ks": list(KS), "max_length": args.max_length, "seconds": {}}
    for name, (model_dir, pooling) in exports.items():
        params = EmbedParams(max_length=args.max_length, pooling=pooling)
        stores = {}
        for role, spec in corpora.items():
            t = time.perf_counter()
            embed(model_dir, spec, work / f"{name}-{role}", params, progress=False)
            results["seconds"][f"{name}/{role}"] = round(time.perf_counter() - t, 1)
            stores[role] = open_store(work / f"{name}-{role}")
            print(name, role, len(stores[role]), results["seconds"][f"{name}/{role}"], flush=True)
        per_bank = {}
        for bank in ("bank_442", "bank_10"):
            res = deep_knn_ood(stores[bank], stores["newsqa"], list(KS), in_test=stores["dev_half"])
            rows = {}
            for k in KS:
                m = meaningful(res, k)
                rows[str(k)] = {"auroc": res.metrics[k]["auroc"], "fpr_at_tpr95": res.metrics[k]["fpr_at_tpr"],
                                "fraction_flagged": m["fraction"], "meaningful": m["ok"], "verdict": m["reason"]}
            per_bank[bank] = {"n_bank": res.meta["n_bank"], "n_val": res.meta["n_val"], "by_k": rows}
            print(name, bank, json.dumps({k: round(v["auroc"], 3) for k, v in rows.items()}), flush=True)
        results["encoders"][name] = {"model": str(model_dir), "pooling": pooling, **per_bank}
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    results["note"] = ("pre-trained encoders unless --export names others; the shared experiment's OOD uses the "
                       "QA-fine-tuned encoders' CLS, which this run does not have")
    if args.dry_run:
        print(json.dumps(results, indent=1)[:3000])
        return
    save(args.name, results)


if __name__ == "__main__":
    main()
