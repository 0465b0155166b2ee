"""Exact self-kNN with the bank streamed block by block (the default) vs one index over every point.

Each mode runs in its own process (peak RSS is per process), on the same clustered vectors as bench_knn.py:
seconds, the RSS the search adds to the process (peak RSS reset once the vectors are made), and whether both give the same neighbours (row for row,
ties included). Results: benchmarks/results/knn-stream-cpu.json.

    python benchmarks/bench_knn_stream.py [--n 100000] [--dim 384] [--k 10] [--bank-rows 65536]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, peak_rss_mb, save  # noqa: E402


def _vectors(n: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(200, dim)).astype(np.float32)
    return (centers[rng.integers(0, 200, n)] + 0.7 * rng.normal(size=(n, dim))).astype(np.float32)


def reset_peak_rss() -> None:
    """Linux: start this process's peak RSS (VmHWM) afresh from its current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _one(mode: str, n: int, dim: int, k: int, bank_rows: int, out: str) -> None:
    from lookalike.analysis.knn import build_index, knn_search, knn_self_streamed, load_normalized

    x = load_normalized(_vectors(n, dim))
    reset_peak_rss()  # the peak of making the vectors is not the search's
    base = peak_rss_mb()
    with Timer() as t:
        if mode == "streamed":
            sims, rows = knn_self_streamed(x, k, bank_rows=bank_rows)
        else:
            sims, rows = knn_search(x, x, k, index=build_index(x, "flat"), exclude_rows=np.arange(n))
    np.save(out, rows)
    print(json.dumps({"seconds": round(t.seconds, 2), "rss_before_search_mb": round(base, 1),
                      "peak_rss_in_search_mb": round(peak_rss_mb(), 1),
                      "search_added_mb": round(peak_rss_mb() - base, 1), "vectors_mb": round(x.nbytes / 1e6, 1)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--bank-rows", type=int, default=65536)
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        return _one(args.mode, args.n, args.dim, args.k, args.bank_rows, args.out)
    result = {"n": args.n, "dim": args.dim, "k": args.k, "bank_rows": args.bank_rows, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("one-index", "streamed"):
            cmd = [sys.executable, __file__, "--mode", mode, "--out", f"{tmp}/{mode}.npy", "--n", str(args.n),
                   "--dim", str(args.dim), "--k", str(args.k), "--bank-rows", str(args.bank_rows)]
            result["modes"][mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                              text=True).stdout.strip().splitlines()[-1])
            print(mode, result["modes"][mode], flush=True)
        same = np.array_equal(np.load(f"{tmp}/one-index.npy"), np.load(f"{tmp}/streamed.npy"))
    one, st = result["modes"]["one-index"], result["modes"]["streamed"]
    result.update(same_neighbours=bool(same), search_memory_saved_mb=round(one["search_added_mb"] - st["search_added_mb"], 1),
                  time_ratio_streamed_over_one_index=round(st["seconds"] / one["seconds"], 3))
    save("knn-stream-cpu", result)


if __name__ == "__main__":
    main()
