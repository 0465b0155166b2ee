"""The engine against its peers on an idle machine and with the other cores busy, in one run: why a lead shrinks
under contention (ONNX Runtime's spin-waiting threads, the thread count) and which defaults keep it.

Each run embeds the same real records (../shared/data, max length 256, packaged MiniLM fp32, CLS) in rounds that
interleave every contender (best round kept). "busy" starts one busy-loop process per core but one, for the whole
condition. Contenders:
- lookalike's `Embedder` with ORT's spinning on (its default) and off, at 2 threads and 1;
- sentence-transformers' ONNX backend (its own tokenizing, padding and session) on lookalike's `--st-folder` export;
- fastembed 0.9.1 on the plain export (its custom-model route).

    python benchmarks/bench_contention.py [--limit 1000] [--rounds 3]   → results/contention-cpu.json
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import load_average, real_corpus, save, work_dir  # noqa: E402

MAX_LENGTH, BATCH = 256, 32


def _spin():
    while True:
        pass


def lookalike_run(export: Path, texts, spinning: str, threads: int):
    from lookalike.core.session import SPIN_ENV
    from lookalike.engine import Embedder

    os.environ[SPIN_ENV] = spinning
    try:
        e = Embedder(export, threads=threads, max_length=MAX_LENGTH)
        e.encode(texts[:16])  # warm-up
    finally:
        os.environ.pop(SPIN_ENV, None)

    def go():
        t = time.perf_counter()
        e.encode(texts)
        return time.perf_counter() - t
    return go


def st_run(folder: Path, texts):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), backend="onnx", device="cpu")
    st.max_seq_length = MAX_LENGTH
    st.encode(texts[:16], batch_size=16)

    def go():
        t = time.perf_counter()
        st.encode(texts, batch_size=BATCH, show_progress_bar=False)
        return time.perf_counter() - t
    return go


def fastembed_run(plain: Path, texts):
    from bench_engine import fastembed_model

    te = fastembed_model(plain, MAX_LENGTH)
    list(te.embed(texts[:8], batch_size=8))

    def go():
        t = time.perf_counter()
        list(te.embed(texts, batch_size=BATCH))
        return time.perf_counter() - t
    return go


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from lookalike.exporters import export

    texts = [r["text"] for r in real_corpus(args.limit)]
    work = work_dir("lookalike-contention-")
    os.environ["LOOKALIKE_CACHE"] = str(work / "cache")
    fused, plain = work / "fused", work / "plain"
    export("minilm", fused, st_folder=True)
    export("minilm", plain, optimize=False)
    cores = os.cpu_count() or 2
    out = {"records": len(texts), "max_length": MAX_LENGTH, "rounds": args.rounds, "statistic": "best round",
           "cores": cores, "busy": f"{cores - 1} busy-loop process(es): every core but one taken",
           "load_before": load_average(), "conditions": {}}
    for condition in ("idle", "busy"):
        hogs = [mp.Process(target=_spin, daemon=True) for _ in range(cores - 1)] if condition == "busy" else []
        for h in hogs:
            h.start()
        time.sleep(2 if hogs else 0)
        load = load_average()["1min"]
        try:
            runs = {f"lookalike spin={s} threads={t}": lookalike_run(fused, texts, s, t)
                    for s in ("1", "0") for t in (cores, 1)}
            runs["sentence-transformers onnx"] = st_run(fused, texts)
            runs["fastembed"] = fastembed_run(plain, texts)
            best = {n: float("inf") for n in runs}
            for _ in range(args.rounds):
                for n, go in runs.items():
                    best[n] = min(best[n], go())
        finally:
            for h in hogs:
                h.terminate()
        out["conditions"][condition] = {"load_1min_at_start": round(load, 2),
                                        "records_per_s": {n: round(len(texts) / s, 1) for n, s in best.items()}}
        print(condition, out["conditions"][condition], flush=True)
    for condition, c in out["conditions"].items():
        r = c["records_per_s"]
        default = r[f"lookalike spin=1 threads={cores}"]
        c["ratios"] = {f"lookalike (spin={s}, {cores} threads) / {peer}": round(r[f"lookalike spin={s} threads={cores}"]
                                                                             / r[peer], 2)
                       for s in ("1", "0") for peer in ("sentence-transformers onnx", "fastembed")}
        c["spin_off_over_on"] = round(r[f"lookalike spin=0 threads={cores}"] / default, 3)
    out["load_after"] = load_average()
    save("contention-cpu", out)


if __name__ == "__main__":
    main()
