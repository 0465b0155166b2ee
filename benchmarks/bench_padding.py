"""Padding of the engine's batches by sort window and batch budget, on the real mixed text of ../shared/data
(IMDB reviews and SQuAD v2 / NewsQA question + context pairs, interleaved as in bench_host.py). Padding is
padded tokens / real tokens - 1 over every batch `token_budget_batches` makes, windows cut by the engine's rule.
No timing: the numbers are a property of the policy. Writes benchmarks/results/padding-cpu.json.

    python benchmarks/bench_padding.py [--max-length 256]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402
from bench_host import corpus_rows  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()

    import transformers

    from lookalike.data import Record
    from lookalike.engine.batching import token_budget_batches, tokenize
    from lookalike.engine.plan import window_ranges
    from lookalike.models import minilm_path
    from lookalike.params import EmbedParams

    rows = corpus_rows(None)
    recs = [Record(r["id"], r["text"], r.get("pair")) for r in rows]
    enc = tokenize(transformers.AutoTokenizer.from_pretrained(minilm_path()), recs, args.max_length)
    shard = EmbedParams().shard_rows
    table = {}
    for budget in (1024, 65536):
        for window in (512, 2048, 4096, EmbedParams().sort_window, 20000):
            real = padded = 0
            for a, b in window_ranges(0, len(enc), window, max(shard, window)):
                for batch in token_budget_batches(enc.slice(a, b), budget, 0):
                    real += batch.real_tokens
                    padded += batch.input_ids.size
            table[f"budget {budget}, window {window}"] = round(padded / real - 1, 4)
            print(budget, window, table[f"budget {budget}, window {window}"], flush=True)
    save("padding-cpu", {"records": len(recs), "real_tokens": int(enc.n_tokens.sum()), "max_length": args.max_length,
                         "default_sort_window": EmbedParams().sort_window, "padding_overhead": table})


if __name__ == "__main__":
    main()
