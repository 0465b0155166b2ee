"""Latency and throughput of an export, and the machine's measured matmul ceiling to compare against."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from .runtime import OnnxModel


def flops_per_token(manifest: dict, seq_len: int) -> float:
    """Forward FLOPs per token of a BERT encoder: 2 x (non-embedding weights) + attention scores and mixing."""
    h = manifest["hidden_size"]
    layers = manifest["num_layers"]
    vocab = manifest.get("vocab_size") or 0
    positions = manifest.get("max_position_embeddings") or 512
    emb = (vocab + positions + 2) * h
    dense = max(manifest["parameters"] - emb, 0)
    return 2.0 * dense + 4.0 * layers * seq_len * h


def matmul_ceiling_gflops(n: int = 1024, repeat: int = 5, threads: int | None = None) -> float:
    """Best observed float32 GEMM rate of numpy's BLAS on this machine (GFLOP/s)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9


def latency(model: OnnxModel, batch_sizes: Sequence[int] = (1, 8, 32), seq_lengths: Sequence[int] = (32, 128, 384),
            repeat: int = 20, warmup: int = 3, output: str | None = None, seed: int = 0) -> list[dict]:
    """p50/p90/p99 latency and throughput for each batch size x sequence length (synthetic full-length inputs)."""
    rng = np.random.default_rng(seed)
    vocab = int(model.manifest.get("vocab_size") or 1000)
    out = output or model.output_names[0]
    rows = []
    for L in seq_lengths:
        L = min(L, model.max_positions)
        for B in batch_sizes:
            ids = rng.integers(1000, vocab, size=(B, L), dtype=np.int64)
            ids[:, 0] = model.tokenizer.cls_token_id or 101
            ids[:, -1] = model.tokenizer.sep_token_id or 102
            mask = np.ones_like(ids)
            for _ in range(warmup):
                model.run([out], ids, mask)
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                model.run([out], ids, mask)
                times.append(time.perf_counter() - t)
            t = np.array(times)
            p50 = float(np.percentile(t, 50))
            rows.append({"batch_size": B, "seq_len": L, "p50_ms": p50 * 1e3, "p90_ms": float(np.percentile(t, 90)) * 1e3,
                         "p99_ms": float(np.percentile(t, 99)) * 1e3, "seq_per_s": B / p50, "tokens_per_s": B * L / p50,
                         "gflops": flops_per_token(model.manifest, L) * B * L / p50 / 1e9})
    return rows
