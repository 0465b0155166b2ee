"""Appending shards: the cost of recording a shard must not grow with the number of shards.

Writes N one-row shards (384-d float32, the smallest shard: bookkeeping dominates) through the real StoreWriter
`embed` uses, and reports the rate (shards/s) over the first and the last 1,000 shards. In the same run, the
old bookkeeping (the whole manifest rewritten after every shard) is measured over its own first and last 1,000 of
a shorter run, so the ratio shows what the journal changed. Cleans up what it writes.

    python benchmarks/bench_shards.py                 # 50,000 shards with the journal, 5,000 the old way
    python benchmarks/bench_shards.py --n 5000 --old 2000
→ benchmarks/results/shards-append-cpu.json
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
from _common import peak_rss_mb, save, work_dir

from lookalike.core import shards as shards_mod
from lookalike.core.store import StoreWriter, open_store

WINDOW = 1000


def run(folder: Path, n: int, whole_rewrite: bool) -> dict:
    real = shards_mod.ShardedWriter._journal
    if whole_rewrite:  # the bookkeeping before the journal: the manifest, whole, after every shard
        shards_mod.ShardedWriter._journal = lambda self, index, entry: self._fold()
    x = np.random.default_rng(0).normal(size=(1, 384)).astype(np.float32)
    stamps = []
    t0 = time.perf_counter()
    try:
        with StoreWriter(folder, {"model_sha256": "bench", "pooling": "cls", "normalize": False, "max_length": 8,
                                  "dtype": "float32"}, 384, 1) as w:
            for i in range(n):
                w.append([f"r{i}"], x, np.array([3]), np.array([False]))
                stamps.append(time.perf_counter())
            t_fin = time.perf_counter()
            w.finalize()
            finalize_s = time.perf_counter() - t_fin
    finally:
        shards_mod.ShardedWriter._journal = real
    first = WINDOW / (stamps[WINDOW - 1] - t0)
    last = WINDOW / (stamps[-1] - stamps[-WINDOW - 1])
    t = time.perf_counter()
    store = open_store(folder)
    open_s = time.perf_counter() - t
    assert len(store) == n
    return {"shards": n, "seconds": round(stamps[-1] - t0, 1), "finalize_seconds": round(finalize_s, 2),
            "open_and_verify_seconds": round(open_s, 2),
            "rate_first_1000_shards_per_s": round(first, 1), "rate_last_1000_shards_per_s": round(last, 1),
            "last_over_first": round(last / first, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--old", type=int, default=5_000)
    args = ap.parse_args()
    root = work_dir("lookalike-bench-shards-")
    try:
        journal = run(root / "journal", args.n, whole_rewrite=False)
        print("journal:", journal)
        shutil.rmtree(root / "journal")
        old = run(root / "old", args.old, whole_rewrite=True)
        print("whole manifest per shard:", old)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    save("shards-append-cpu", {
        "what": "one-row 384-d float32 shards appended through StoreWriter (the writer embed uses); rate over the "
                "first and last 1,000 shards; the old bookkeeping (whole manifest rewritten per shard) measured "
                "in the same run over a shorter run",
        "journal": journal, "whole_manifest_per_shard": old, "peak_rss_mb": round(peak_rss_mb(), 1)})


if __name__ == "__main__":
    main()
