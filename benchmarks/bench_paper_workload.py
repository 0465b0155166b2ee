"""The paper-shaped workload on CPU: N exports that share one tokenizer embed one corpus, with and without the
token cache, end to end (the cache run includes tokenizing once). Writes benchmarks/results/paper-workload-cpu.json.

The paper embeds each corpus with six BERTs that share bert-base-uncased's vocabulary, before and after
fine-tuning; here the packaged MiniLM's family (fp32, int8, layers 1,3,5 and 2,5) plays them, on the SQuAD v2
dev half as question + context pairs.

    python benchmarks/bench_paper_workload.py [--limit 2000] [--max-length 256]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, save, work_dir  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()

    import transformers

    from lookalike.data import CorpusSpec
    from lookalike.engine import embed
    from lookalike.engine.tokens import tokenize_corpus
    from lookalike.exporters import export
    from lookalike.models import minilm_path
    from lookalike.params import EmbedParams

    work = work_dir("lookalike-paper-")
    os.environ["LOOKALIKE_CACHE"] = str(work / "cache")
    corpus = CorpusSpec(SHARED / "squad2" / "cs224n-dev-v2.0.json", limit=args.limit)
    family = {"fp32": {}, "int8": {"quantize": "int8"}, "L3": {"keep_layers": [1, 3, 5]}, "L2": {"keep_layers": [2, 5]}}
    for name, kw in family.items():
        export(str(minilm_path()), work / name, **kw)
    params = EmbedParams(max_length=args.max_length)
    results = {}
    for mode in ("text", "cache"):
        t0 = time.perf_counter()
        tokens = False
        if mode == "cache":
            tok = transformers.AutoTokenizer.from_pretrained(work / "fp32")
            r = tokenize_corpus(tok, corpus, work / "tokens", max_length=args.max_length)
            tokens = r["out"]
            results["tokenize_seconds"] = r["seconds"]
        per = {}
        for name in family:
            s = embed(work / name, corpus, work / f"{mode}-{name}", params, tokens=tokens, progress=False)
            per[name] = s["seconds"]
        results[f"{mode}_seconds_total"] = round(time.perf_counter() - t0, 2)
        results[f"{mode}_per_model"] = per
        print(mode, results[f"{mode}_seconds_total"], per, flush=True)
    same = all(json.loads((work / f"text-{n}" / "manifest.json").read_text())["shards"] ==
               json.loads((work / f"cache-{n}" / "manifest.json").read_text())["shards"] for n in family)
    results["stores_identical"] = same
    results["speedup_end_to_end"] = results["text_seconds_total"] / results["cache_seconds_total"]
    save("paper-workload-cpu", {"corpus": str(corpus.path), "records": args.limit, "max_length": args.max_length,
                                "models": list(family), **results})


if __name__ == "__main__":
    main()
