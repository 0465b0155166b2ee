"""Padding of the engine's batches, the padding-minimising cut (`batching.cut_batches`, dynamic programming)
against the greedy one it replaced (each batch as many of the longest remaining rows as the budget holds), on
real text at CPU and GPU budgets, windows cut by the engine's rule. Padding is padded tokens / real tokens - 1.

Corpora: the shared-data mix of bench_host.py (IMDB reviews and SQuAD v2 / NewsQA question + context pairs,
17,290 rows), the benchmark records of bench_engine.py (real_corpus, 2,000), and those repeated 20 times.
With --time, embeds the benchmark records with the packaged MiniLM at the CPU budget with either cut, in interleaved
rounds (best of each), to show the cut costs no time where padding was already small.
Writes benchmarks/results/padding-cpu.json.

    python benchmarks/bench_padding.py [--max-length 256] [--time] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import real_corpus, save, work_dir  # noqa: E402
from bench_host import corpus_rows  # noqa: E402


def greedy_batches(enc, batch_tokens: int, pad_id: int, max_batch: int = 512):
    """The cut before the dynamic programme: longest first, budget // longest rows per batch."""
    from lookalike.engine.batching import _pad

    order = np.argsort(-enc.n_tokens, kind="stable")
    out, i = [], 0
    while i < len(order):
        longest = int(enc.n_tokens[order[i]])
        size = max(1, min(max_batch, batch_tokens // max(longest, 1)))
        out.append(_pad(enc, order[i:i + size], longest, pad_id))
        i += size
    return out


def padding(enc, budget: int, window: int, shard: int, cut) -> dict:
    from lookalike.engine.plan import window_ranges

    real = padded = batches = 0
    t = time.perf_counter()
    for a, b in window_ranges(0, len(enc), window, max(shard, window)):
        for batch in cut(enc.slice(a, b), budget, 0):
            real += batch.real_tokens
            padded += batch.input_ids.size
            batches += 1
    return {"padding": round(padded / real - 1, 4), "batches": batches,
            "cut_seconds_per_10k_rows": round((time.perf_counter() - t) / len(enc) * 1e4, 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--time", action="store_true", help="also time embedding the benchmark records with either cut")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import transformers

    from lookalike.data import Record
    from lookalike.engine.batching import token_budget_batches, tokenize
    from lookalike.models import minilm_path
    from lookalike.params import EmbedParams

    tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
    mix = [Record(r["id"], r["text"], r.get("pair")) for r in corpus_rows(None)]
    bench = [Record(r["id"], r["text"]) for r in real_corpus()]
    corpora = {"shared-data mix": mix, f"{len(bench)} benchmark records": bench,
               f"{len(bench)} benchmark records x20": [Record(f"{k}-{r.id}", r.text) for k in range(20) for r in bench]}
    shard = window = EmbedParams().shard_rows
    table = {}
    for name, recs in corpora.items():
        enc = tokenize(tok, recs, args.max_length)
        for budget in (1024, 65536):
            row = {"rows": len(recs), "real_tokens": int(enc.n_tokens.sum()),
                   "greedy": padding(enc, budget, window, shard, greedy_batches),
                   "dp": padding(enc, budget, window, shard, token_budget_batches)}
            table[f"{name}, budget {budget}"] = row
            print(name, budget, row, flush=True)
    result = {"max_length": args.max_length, "sort_window": window, "padding": table}
    if args.time:
        result["embed_time_cpu_budget"] = time_cuts(bench, args.rounds)
    save("padding-cpu", result)


def time_cuts(bench, rounds: int) -> dict:
    """Embedding the records with MiniLM at the CPU budget, greedy and DP cuts in interleaved rounds."""

    import lookalike.engine.windows as windows
    from lookalike.engine import Embedder
    from lookalike.exporters import export
    from lookalike.models import minilm_path

    folder = work_dir("lookalike-padding-") / "fp32"
    export(str(minilm_path()), folder)
    model = Embedder(folder, max_length=256)
    texts = [r.text for r in bench]
    dp_cut = windows.token_budget_batches
    times = {"greedy": [], "dp": []}
    vecs = {}
    for _ in range(rounds):
        for name, cut in (("greedy", greedy_batches), ("dp", dp_cut)):
            windows.token_budget_batches = cut
            t = time.perf_counter()
            vecs[name] = model.encode(texts)
            times[name].append(time.perf_counter() - t)
    windows.token_budget_batches = dp_cut
    a, b = vecs["greedy"], vecs["dp"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {"rows": len(texts), "batch_tokens": model.settings()["batch_tokens"],
            "greedy_best_seconds": round(min(times["greedy"]), 3), "dp_best_seconds": round(min(times["dp"]), 3),
            "dp_vs_greedy": min(times["dp"]) / min(times["greedy"]), "rounds": rounds,
            "min_cosine_dp_vs_greedy": float(cos.min())}


if __name__ == "__main__":
    main()
