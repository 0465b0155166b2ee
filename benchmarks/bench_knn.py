"""Exact self-kNN of 100,000 x 384 float32 vectors, K=10: lookalike (FAISS) vs scikit-learn brute force.

Reports seconds, the fraction of this machine's measured GEMM ceiling (2 n^2 d FLOPs), the speed-up over
sklearn's NearestNeighbors(algorithm="brute", metric="cosine") in the same run, agreement of the neighbour
sets, and peak RSS. Results: benchmarks/results/knn-cpu.json.

    python benchmarks/bench_knn.py [--n 100000] [--dim 384] [--k 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, peak_rss_mb, save  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--block-rows", type=int, default=8192)
    args = ap.parse_args()

    from lookalike.analysis.knn import knn_self
    from lookalike.engine.bench import matmul_ceiling_gflops

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(200, args.dim)).astype(np.float32)
    x = (centers[rng.integers(0, 200, args.n)] + 0.7 * rng.normal(size=(args.n, args.dim))).astype(np.float32)
    ceiling = matmul_ceiling_gflops()
    rss0 = peak_rss_mb()
    with Timer() as t:
        res = knn_self(x, args.k, block_rows=args.block_rows)
    flops = 2.0 * args.n * args.n * args.dim
    ours = {"seconds": t.seconds, "gflops": flops / t.seconds / 1e9, "fraction_of_gemm_ceiling": flops / t.seconds / 1e9 / ceiling,
            "peak_rss_before_mb": rss0, "peak_rss_mb": peak_rss_mb(), "data_mb": x.nbytes / 1e6}
    print("lookalike", ours)
    from sklearn.neighbors import NearestNeighbors

    with Timer() as t:
        nn = NearestNeighbors(n_neighbors=args.k + 1, algorithm="brute", metric="cosine").fit(x)
        _, idx = nn.kneighbors(x)
    sk = {"seconds": t.seconds}
    print("sklearn", sk)
    # agreement of neighbour sets (sklearn returns self among the k+1; drop it by row)
    agree = []
    for r in range(0, args.n, max(1, args.n // 2000)):
        theirs = [j for j in idx[r] if j != r][: args.k]
        agree.append(len(set(theirs) & set(res.neighbors[r])) / args.k)
    result = {"n": args.n, "dim": args.dim, "k": args.k, "gemm_ceiling_gflops": ceiling, "lookalike": ours,
              "sklearn_brute": sk, "neighbour_set_agreement_sample": float(np.mean(agree)),
              "ratios": {"speedup_vs_sklearn_brute": sk["seconds"] / ours["seconds"],
                         "fraction_of_gemm_ceiling": ours["fraction_of_gemm_ceiling"]}}
    print(result["ratios"], "agreement", result["neighbour_set_agreement_sample"])
    save("knn-cpu", result)


if __name__ == "__main__":
    main()
