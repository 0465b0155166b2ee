"""Deep-kNN OOD over NewsQA with a bank that covers SQuAD's 442 training articles, beside the 10-article bank.

The bank: a stratified sample of SQuAD 1.1 train (`../shared/data/squad1_train/train-v1.1-explorer.json.gz`,
all 442 articles), the same share of every article's questions (seed 0), as question + context pairs exactly
like the in-distribution test (the SQuAD v2 dev half) and the challenge set (NewsQA dev). Beside it, the bank
of the 10 SQuAD v2 train articles the shared experiment used. For each encoder: AUROC (dev half vs NewsQA),
the fraction of NewsQA flagged at TPR 95%, the report's meaningfulness verdict, and the k sweep (Figure 1(c)).

    python benchmarks/bench_covering_bank.py [--bank 20000] [--encoders minilm-cls,minilm-mean]
    python benchmarks/bench_covering_bank.py --encoders "" --export runs/l6-fe="MiniLM-L6" \
        --export runs/int8-fe="MiniLM int8" --work runs/bank --name covering-bank-family --into-shared

Encoders are exports of the packaged MiniLM (pre-trained; `--export DIR=NAME` adds others, e.g. QA-fine-tuned
exports). With several, the first is the reference: every other one's OOD set is compared with it (Jaccard per
bank and k, with its chance level and the pair's meaningfulness verdict), as Table 2's data-distribution column.
`--work DIR` keeps the stores (a re-run reuses complete ones); `--into-shared` also writes the result into
benchmarks/results/shared-experiment.json under "covering_bank". Writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, save, work_dir  # noqa: E402

KS = (1, 5, 10, 20, 50, 100)


def stratified_bank(n: int, seed: int, out: Path) -> dict:
    """A JSONL of about n question + context pairs, the same share of every article's questions
    (`lookalike.data.sample.stratified_squad`), as the SQuAD reader makes them."""
    from lookalike.data.sample import stratified_squad

    rows, info = stratified_squad(json.loads(gzip.open(SHARED / "squad1_train" / "train-v1.1-explorer.json.gz").read()),
                                  n, seed)
    out.write_text("".join(json.dumps({k: r[k] for k in ("id", "text", "pair")}) + "\n" for r in rows))
    return info


def length_diagnosis(stores: dict, k: int = 10) -> dict:
    """How long the pairs the model read are (tokens, truncated at the max length) in the bank, the dev half and
    NewsQA, and AUROC (dev half vs NewsQA, bank_442, k) within bins of equal length: does length explain it?"""
    from lookalike.analysis.knn import load_normalized
    from lookalike.analysis.ood import auroc, kth_distance_scores

    bank, dev, news = stores["bank_442"], stores["dev_half"], stores["newsqa"]
    x = load_normalized(bank)
    sd = kth_distance_scores(x, load_normalized(dev), [k])[k]
    sn = kth_distance_scores(x, load_normalized(news), [k])[k]
    out = {"k": k, "auroc_all": auroc(sd, sn)}
    for role, s in (("bank_442", bank), ("dev_half", dev), ("newsqa", news)):
        out[role] = {"tokens_median": float(np.median(s.n_tokens)), "truncated": float(np.mean(s.truncated))}
    bins = {}
    for lo, hi in ((0, 128), (128, 192), (192, 256), (256, 257)):
        md, mn = (dev.n_tokens >= lo) & (dev.n_tokens < hi), (news.n_tokens >= lo) & (news.n_tokens < hi)
        if md.sum() >= 30 and mn.sum() >= 30:
            bins[f"{lo}-{hi - 1}"] = {"auroc": auroc(sd[md], sn[mn]), "n_dev": int(md.sum()), "n_newsqa": int(mn.sum())}
    out["auroc_by_tokens"] = bins
    return out


def question_only(spec, out: Path):
    """The corpus's questions alone (its records' first text, without the context), as a JSONL corpus."""
    from lookalike.data import CorpusSpec

    out.write_text("".join(json.dumps({"id": r.id, "text": r.text}) + "\n" for r in spec.records()))
    return CorpusSpec(out)


def ood_agreement(ood_results: dict) -> dict:
    """{bank: [{model_i: reference, model_j, by_k: {k: jaccard, chance, verdict}}]}: Table 2's data-distribution
    column on each bank, the first encoder as the reference."""
    from lookalike.analysis.agreement import distribution_agreement
    from lookalike.analysis.tables import chance_jaccard, ood_verdict

    out = {}
    for bank, by_model in ood_results.items():
        names = list(by_model)
        ref = names[0]
        rows = []
        for other in names[1:]:
            a, b = by_model[ref], by_model[other]
            by_k = {}
            for k in KS:
                agreement = distribution_agreement(a, b, k)
                ok, why = ood_verdict({ref: a, other: b}, k)
                by_k[str(k)] = {"jaccard": agreement["jaccard"], "n_ood_i": agreement["n_ood_a"],
                                "n_ood_j": agreement["n_ood_b"],
                                "chance": chance_jaccard(agreement["n_ood_a"], agreement["n_ood_b"], len(a.test_ids)),
                                "meaningful": ok, "verdict": why}
            rows.append({"model_i": ref, "model_j": other, "by_k": by_k})
        out[bank] = rows
    return out


def into_shared(results: dict, name: str) -> None:
    """The covering-bank run beside the shared experiment's own (10-article) OOD numbers, in its results file."""
    path = Path(__file__).resolve().parent / "results" / "shared-experiment.json"
    shared = json.loads(path.read_text())
    shared["covering_bank"] = {
        "from": f"benchmarks/results/{name}.json (benchmarks/bench_covering_bank.py)",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "what": ("deep-kNN OOD with the QA-fine-tuned encoders' CLS: bank = a stratified sample of all 442 SQuAD "
                 "train articles (bank_442) beside the 10 SQuAD v2 train articles the run above used (bank_10); "
                 "in-distribution test = the SQuAD v2 dev half, challenge set = NewsQA dev"),
        "bank": results["bank"], "ks": results["ks"],
        "per_model": {m: {"inputs": e.get("inputs"), **{bank: {"auroc_k10": e[bank]["by_k"]["10"]["auroc"],
                                 "fraction_flagged_k10": e[bank]["by_k"]["10"]["fraction_flagged"],
                                 "meaningful_k10": e[bank]["by_k"]["10"]["meaningful"],
                                 "verdict_k10": e[bank]["by_k"]["10"]["verdict"],
                                 "auroc_by_k": {k: v["auroc"] for k, v in e[bank]["by_k"].items()},
                                 "fraction_flagged_by_k": {k: v["fraction_flagged"]
                                                           for k, v in e[bank]["by_k"].items()}}
                          for bank in ("bank_442", "bank_10")}}
                      for m, e in results["encoders"].items()},
        "ood_agreement": results.get("ood_agreement"),
        "length_diagnosis": results.get("length_diagnosis"),
    }
    path.write_text(json.dumps(shared, indent=2) + "\n")
    print(f"wrote {path} (covering_bank)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bank", type=int, default=20000, help="questions in the covering bank")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--encoders", default="minilm-cls", help="minilm-cls, minilm-mean (pre-trained MiniLM)")
    ap.add_argument("--export", action="append", default=[], help="DIR=NAME: another feature-extraction export")
    ap.add_argument("--limit-test", type=int, default=None, help="records of the dev half and NewsQA (all)")
    ap.add_argument("--dry-run", action="store_true", help="a tiny run to check the script (300-question bank)")
    ap.add_argument("--name", default="covering-bank", help="results file name [covering-bank]")
    ap.add_argument("--work", default=None, help="folder for the bank and the stores (kept; complete ones reused)")
    ap.add_argument("--question-only", action="store_true",
                    help="also the first encoder on the questions alone (bank, dev half and NewsQA without contexts)")
    ap.add_argument("--into-shared", action="store_true",
                    help="also write the result into shared-experiment.json under 'covering_bank'")
    args = ap.parse_args()
    if args.dry_run:
        args.bank, args.limit_test = 300, 150

    from lookalike.analysis.ood import deep_knn_ood, meaningful
    from lookalike.data import CorpusSpec
    from lookalike.engine import embed, open_store
    from lookalike.exporters import export
    from lookalike.models import minilm_path
    from lookalike.params import EmbedParams

    work = Path(args.work) if args.work else work_dir("lookalike-bank-")
    work.mkdir(parents=True, exist_ok=True)
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
    runs = [(name, model_dir, pooling, corpora) for name, (model_dir, pooling) in exports.items()]
    if args.question_only and runs:
        questions = {role: question_only(spec, work / f"{role}-questions.jsonl") for role, spec in corpora.items()}
        runs.append((f"{runs[0][0]} (questions only)", runs[0][1], runs[0][2], questions))
    results = {"bank": bank_info, "encoders": {}, "ks": list(KS), "max_length": args.max_length, "seconds": {}}
    ood_results: dict = {}
    for name, model_dir, pooling, corpora_of_run in runs:
        params = EmbedParams(max_length=args.max_length, pooling=pooling)
        stores = {}
        for role, spec in corpora_of_run.items():
            t = time.perf_counter()
            embed(model_dir, spec, work / f"{name}-{role}", params, progress=False)
            results["seconds"][f"{name}/{role}"] = round(time.perf_counter() - t, 1)
            stores[role] = open_store(work / f"{name}-{role}")
            print(name, role, len(stores[role]), results["seconds"][f"{name}/{role}"], flush=True)
        per_bank = {}
        for bank in ("bank_442", "bank_10"):
            res = deep_knn_ood(stores[bank], stores["newsqa"], list(KS), in_test=stores["dev_half"])
            if "(questions only)" not in name:  # a different input: not one of the compared models
                ood_results.setdefault(bank, {})[name] = res
            rows = {}
            for k in KS:
                m = meaningful(res, k)
                rows[str(k)] = {"auroc": res.metrics[k]["auroc"], "fpr_at_tpr95": res.metrics[k]["fpr_at_tpr"],
                                "fraction_flagged": m["fraction"], "meaningful": m["ok"], "verdict": m["reason"]}
            per_bank[bank] = {"n_bank": res.meta["n_bank"], "n_val": res.meta["n_val"], "by_k": rows}
            print(name, bank, json.dumps({k: round(v["auroc"], 3) for k, v in rows.items()}), flush=True)
        if not results.get("length_diagnosis"):  # the reference: are NewsQA's long, truncated pairs the reason?
            results["length_diagnosis"] = {"model": name, **length_diagnosis(stores)}
        results["encoders"][name] = {"model": str(model_dir), "pooling": pooling,
                                     "inputs": "questions only" if corpora_of_run is not corpora else
                                     "question + context pairs", **per_bank}
    if len(exports) > 1:
        results["ood_agreement"] = ood_agreement(ood_results)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    results["note"] = ("pre-trained encoders unless --export names others; the shared experiment's OOD uses the "
                       "QA-fine-tuned encoders' CLS, which this run does not have")
    if args.dry_run:
        print(json.dumps(results, indent=1)[:3000])
        print(json.dumps(results.get("ood_agreement"))[:1500])
        return
    save(args.name, results)
    if args.into_shared:
        into_shared(results, args.name)


if __name__ == "__main__":
    main()
