"""Streamed CKA against the dense Gram computation and platonic-rep's formulas, on the same arrays, in one run.

- Two real 100,000-row stores of the same texts (e.g. MiniLM fp32 and int8, from bench_scale.py --keep):
  streamed linear CKA, biased and debiased, with its jackknife, 384 against 384 and 384 against a 128-wide
  projection of the second; time and peak RSS.
- The dense O(n²) Gram computation (K = XXᵀ, H K H, float64) at growing n on the same rows until it would not
  fit in memory, and platonic-rep's published formulas (hsic_biased / hsic_unbiased as in its metrics.py,
  re-implemented here in numpy) at the largest n: the values must agree with the streamed ones.
- 1,000,000 × 384: the real rows repeated ten times with seeded noise, streamed block by block: time, and peak
  RSS against the 100k run (memory independent of n).

    python benchmarks/bench_measures.py --a /tmp/lookalike-scale/store-fp32 --b /tmp/lookalike-scale/store-int8
→ benchmarks/results/measures-cpu.json
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from pathlib import Path

import numpy as np
from _common import peak_rss_mb, save

from lookalike.analysis.measures import cka_from_blocks
from lookalike.analysis.vectors import Vectors
from lookalike.core.store import open_store


def _norm(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def dense_cka(x, y) -> tuple[float, float]:
    """(biased, debiased) CKA from n×n Gram matrices, platonic-rep's formulas (hsic_biased: tr(KHLH)/(n-1)²;
    hsic_unbiased: Song et al.)."""
    x, y = _norm(x), _norm(y)
    n = len(x)
    k, l = x @ x.T, y @ y.T

    def biased(a, b):
        h = np.eye(n) - 1.0 / n
        return np.trace(h @ a @ h @ b) / (n - 1) ** 2

    def unbiased(a, b):
        at, bt = a.copy(), b.copy()
        np.fill_diagonal(at, 0)
        np.fill_diagonal(bt, 0)
        v = np.sum(at * bt.T) + np.sum(at) * np.sum(bt) / ((n - 1) * (n - 2)) - 2 * np.sum(at @ bt) / (n - 2)
        return v / (n * (n - 3))

    out = []
    for f in (biased, unbiased):
        out.append(f(k, l) / math.sqrt(f(k, k) * f(l, l)))
    return out[0], out[1]


def blocks(a, b, rows: int, project=None, repeat: int = 1, noise: float = 0.0):
    va, vb = Vectors(store=a), Vectors(store=b)
    rng = np.random.default_rng(0)
    for r in range(repeat):
        for (_, xa), (_, xb) in zip(va.blocks(rows), vb.blocks(rows)):
            if noise and r:
                xa = xa + noise * rng.standard_normal(xa.shape, dtype=np.float32)
                xb = xb + noise * rng.standard_normal(xb.shape, dtype=np.float32)
            yield xa, (xb @ project if project is not None else xb)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", type=Path, required=True)
    ap.add_argument("--b", type=Path, required=True)
    ap.add_argument("--dense", default="1000,2000,5000,10000")
    args = ap.parse_args()
    a, b = open_store(args.a), open_store(args.b)
    n, d = len(a), a.vector_dim
    out: dict = {"stores": {"a": str(args.a), "b": str(args.b)}, "n": n, "dim": d}
    project = np.random.default_rng(1).standard_normal((b.vector_dim, 128)).astype(np.float32) / math.sqrt(128)
    for name, proj in (("384_vs_384", None), ("384_vs_128", project)):
        t = time.perf_counter()
        r = cka_from_blocks(blocks(a, b, 65536, proj), n=n)
        out[f"streamed_{name}"] = {"seconds": round(time.perf_counter() - t, 2), **{k: v for k, v in r.items()}}
        print(name, out[f"streamed_{name}"])
    out["peak_rss_mb_after_100k"] = round(peak_rss_mb(), 1)
    t = time.perf_counter()
    r = cka_from_blocks(blocks(a, b, 65536, repeat=10, noise=0.01), n=10 * n)
    out["streamed_1m_384"] = {"rows": 10 * n, "seconds": round(time.perf_counter() - t, 2),
                              "target_seconds": 120, "what": "the real rows repeated 10x with seeded noise (0.01)",
                              **{k: v for k, v in r.items()}}
    out["peak_rss_mb_after_1m"] = round(peak_rss_mb(), 1)
    print("1M", out["streamed_1m_384"], out["peak_rss_mb_after_1m"])
    out["memory_note"] = "peak RSS of the process after streaming 100k and then 1M rows: the same (O(d²), not O(n))"

    xa, xb = Vectors(store=a).take(np.arange(n)), Vectors(store=b).take(np.arange(n))
    dense = []
    for m in (int(x) for x in args.dense.split(",")):
        need = 5 * m * m * 8  # K, L, H and two products in float64
        if need > 0.6 * resource.getrlimit(resource.RLIMIT_AS)[0] if resource.getrlimit(resource.RLIMIT_AS)[0] > 0 \
                else need > 12 * 2**30:
            dense.append({"n": m, "skipped": f"needs ~{need / 2**30:.1f} GiB"})
            break
        t = time.perf_counter()
        biased, unbiased = dense_cka(xa[:m], xb[:m])
        sec = time.perf_counter() - t
        s = cka_from_blocks([(xa[:m], xb[:m])], groups=2, n=m)
        dense.append({"n": m, "seconds": round(sec, 2), "cka": biased, "cka_debiased": unbiased,
                      "streamed_cka": s["cka"], "streamed_cka_debiased": s["cka_debiased"],
                      "max_relative_difference": max(abs(biased - s["cka"]) / abs(biased),
                                                     abs(unbiased - s["cka_debiased"]) / abs(unbiased))})
        print("dense", dense[-1])
    last = [x for x in dense if "seconds" in x][-1]
    out["dense"] = dense
    out["dense_extrapolated_100k_seconds"] = round(last["seconds"] * (n / last["n"]) ** 3, 0)
    out["dense_memory_at_100k_gib"] = round(5 * n * n * 8 / 2**30, 1)
    out["dense_stops"] = (f"the Gram matrices of n points take ~5·n²·8 bytes: {out['dense_memory_at_100k_gib']} GiB "
                          f"at n = {n:,}, past this machine's 24 GiB beyond n ≈ 25,000")
    del xa, xb

    save("measures-cpu", out)


if __name__ == "__main__":
    main()
