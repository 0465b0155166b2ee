"""Latency and throughput of an export, and the machine's measured matmul ceiling to compare against."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.cpu import cpu_info
from ..core.manifest import describe_int8, positions
from ..core.heads import FEATURE_EXTRACTION, TASKS
from ..data import CorpusSpec
from ..errors import InputError
from ..files import status
from .pipeline import embed
from .runtime import OnnxModel

log = logging.getLogger(__name__)


def flops_per_token(manifest: dict, seq_len: int) -> float:
    """Forward FLOPs per token of a BERT encoder: 2 x (non-embedding weights) + attention scores and mixing."""
    h = manifest["hidden_size"]
    layers = manifest["num_layers"]
    vocab = manifest.get("vocab_size") or 0
    emb = (vocab + positions(manifest) + 2) * h
    dense = max(manifest["parameters"] - emb, 0)
    return 2.0 * dense + 4.0 * layers * seq_len * h


def _numpy_gemm_gflops(n: int, repeat: int) -> float:
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


def _ort_gemm_gflops(shape: tuple[int, int, int], repeat: int, threads: int | None) -> float:
    """ONNX Runtime's own fp32 MatMul (MLAS), the kernel the engine's GEMMs run on: (M x K) @ (K x N)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    m, k, n = shape
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((m, k), dtype=np.float32), "b": rng.standard_normal((k, n), dtype=np.float32)}
    sess.run(None, feeds)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        sess.run(None, feeds)
        best = min(best, time.perf_counter() - t)
    return 2.0 * m * k * n / best / 1e9


def matmul_ceiling_gflops(n: int = 1024, repeat: int = 10, threads: int | None = None) -> float:
    """This machine's fp32 GEMM rate (GFLOP/s): the best of numpy's BLAS and ONNX Runtime's MatMul, n x n.

    Both are measured because either can be the faster one (OpenBLAS vs MLAS differ by CPU vendor); the
    best of several repeats damps noisy shared-CPU neighbours.
    """
    time.sleep(0.5)  # let thread pools that just ran (torch/OpenMP, ORT) stop spinning; they skew this by 2x
    rates = [_numpy_gemm_gflops(n, repeat)]
    try:
        rates.append(_ort_gemm_gflops((n, n, n), repeat, threads))
    except Exception as exc:  # the ceiling is a reference, not a reason to fail a benchmark
        log.debug("ORT GEMM ceiling not measured: %s", exc)
    return max(rates)


def latency(model: OnnxModel, batch_sizes: Sequence[int] = (1, 8, 32), seq_lengths: Sequence[int] = (32, 128, 384),
            repeat: int = 20, warmup: int = 3, output: str | None = None, seed: int = 0) -> list[dict]:
    """p50/p90/p99 latency and throughput for each batch size x sequence length (synthetic full-length inputs)."""
    rng = np.random.default_rng(seed)
    vocab = int(model.manifest.vocab_size or 1000)
    out = output or model.output_names[0]
    rows = []
    for L in seq_lengths:
        L = model.clamp(L)
        for B in batch_sizes:
            ids = rng.integers(1000, vocab, size=(B, L), dtype=np.int64)
            ids[:, 0] = model.encoder.cls_token_id or 101
            ids[:, -1] = model.encoder.sep_token_id or 102
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


SPREAD_WARNING = 0.2  # rounds of one cell whose medians differ by more than this: the machine was shared


def interleaved_latency(models: list, outputs: list[str], batch_sizes: Sequence[int], seq_lengths: Sequence[int],
                        repeat: int = 20, rounds: int = 3, warmup: int = 3, seed: int = 0,
                        on_cell=None) -> list[list[dict]]:
    """`latency` for several models at once, with every timed run interleaved across models (cell by cell, run by
    run), so load that shifts during the benchmark falls on all of them alike. Each row adds `spread`: how far
    the medians of `rounds` equal slices of its runs differ, relative to the overall median."""
    rng = np.random.default_rng(seed)
    per_model: list[list[dict]] = [[] for _ in models]
    cells = len(seq_lengths) * len(batch_sizes)
    for L0 in seq_lengths:
        for B in batch_sizes:
            if on_cell is not None:  # progress: which cell of the grid runs now
                on_cell(len(per_model[0]) + 1, cells, B, L0)
            feeds = []
            for m, out in zip(models, outputs):
                L = m.clamp(L0)
                vocab = int(m.manifest.vocab_size or 1000)
                ids = rng.integers(1000, vocab, size=(B, L), dtype=np.int64)
                ids[:, 0] = m.encoder.cls_token_id or 101
                ids[:, -1] = m.encoder.sep_token_id or 102
                feeds.append((ids, np.ones_like(ids)))
                for _ in range(warmup):
                    m.run([out], ids, feeds[-1][1])
            times: list[list[float]] = [[] for _ in models]
            for _ in range(repeat):
                for i, (m, out) in enumerate(zip(models, outputs)):
                    t = time.perf_counter()
                    m.run([out], *feeds[i])
                    times[i].append(time.perf_counter() - t)
            for i, m in enumerate(models):
                t = np.array(times[i])
                L = feeds[i][0].shape[1]
                p50 = float(np.percentile(t, 50))
                slices = [np.median(x) for x in np.array_split(t, max(1, min(rounds, len(t))))]
                per_model[i].append({"batch_size": B, "seq_len": L, "p50_ms": p50 * 1e3,
                                     "p90_ms": float(np.percentile(t, 90)) * 1e3,
                                     "p99_ms": float(np.percentile(t, 99)) * 1e3, "seq_per_s": B / p50,
                                     "tokens_per_s": B * L / p50,
                                     "gflops": flops_per_token(m.manifest, L) * B * L / p50 / 1e9,
                                     "spread": float((max(slices) - min(slices)) / p50)})
    return per_model


def run_bench(model_dirs, batch_sizes, seq_lengths, *, repeat: int = 20, corpus=None, corpus_limit: int = 2000,
              device: str = "auto") -> dict:
    """Latency grid per model (+ engine throughput on a real corpus), the CPU and its GEMM ceiling: the
    measurement `lookalike bench` renders (`analysis.report.write_bench`).

    Models are timed interleaved (run by run), each row has its speed-up over the first model and the spread
    of its rounds; a large spread is a warning (a shared machine)."""
    seen: dict = {}
    for d in model_dirs:
        key = str(Path(d).resolve())
        if key in seen:
            raise InputError(f"{d} is listed twice (as {seen[key]}); each model once")
        seen[key] = d
    status("bench: this machine's fp32 GEMM rate")
    ceiling = matmul_ceiling_gflops()
    status(f"bench: latency of {len(model_dirs)} models, interleaved")
    loaded = [OnnxModel(d, device=device) for d in model_dirs]
    outputs = [TASKS[m.manifest.task].primary for m in loaded]
    grids = interleaved_latency(loaded, outputs, batch_sizes, seq_lengths, repeat=repeat,
                                on_cell=lambda i, n, B, L: status(f"bench: cell {i} of {n} (batch {B} × {L} "
                                                                  f"tokens, {repeat} runs per model)"))
    spread = max((r["spread"] for g in grids for r in g), default=0.0)
    if spread > SPREAD_WARNING:
        log.warning("latency rounds differ by up to %.0f%% of their median: the machine was busy; compare the "
                    "models' speed-ups (timed interleaved), not absolute times", 100 * spread)
    models = []
    for d, m, rows in zip(model_dirs, loaded, grids):
        int8 = m.manifest.quantized
        for r, first in zip(rows, grids[0]):
            # int8 runs integer GEMMs: a fraction of the fp32 GEMM rate would read above 100%
            r["fraction_of_ceiling"] = r["gflops"] / ceiling if m.device == "cpu" and not int8 else None
            r["speedup_vs_first"] = first["p50_ms"] / r["p50_ms"]
        entry = {"model": str(d), "variant": m.manifest.variant_description, "device": m.device,
                 "parameters": m.manifest.parameters, "file_size": m.manifest.file_size,
                 "flops_per_token_at_128": flops_per_token(m.manifest, 128), "latency": rows}
        if m.manifest.int8:
            entry["int8"] = {**m.manifest.int8, "line": describe_int8(m.manifest.int8)}
        if corpus and m.manifest.task == FEATURE_EXTRACTION.name:
            status(f"bench: {Path(d).name} on the corpus")
            with tempfile.TemporaryDirectory() as tmp:
                spec = corpus.replace(limit=corpus.limit or corpus_limit) if isinstance(corpus, CorpusSpec) else \
                    CorpusSpec(str(corpus), limit=corpus_limit)
                s = embed(d, spec, Path(tmp) / "store", model=m,
                          progress=False)
            entry["corpus_throughput"] = {"rows_per_s": s["rows_per_s"], "real_tokens_per_s": s["real_tokens_per_s"],
                                          "rows": s["rows"]}
        models.append(entry)
    result = {"cpu": cpu_info(), "gemm_ceiling_gflops": ceiling, "models": models, "max_spread": spread,
              "timing": "interleaved across models, run by run"}
    return result

