"""Corpus scale, the two big runs of issue #40: a real 1,000,000-record embed killed at about 60% and resumed, and a
10,000,000-row store searched by `knn --sample` and compared by `agree`, with wall time and peak RSS of each step.

Stages (each a real `lookalike` command in a child process; outputs kept in --work so a re-run skips finished
stages; `--stage embed` or `--stage big` runs one):

embed  1. corpus: N short real texts (bench_scale's: sentences of SQuAD train, NewsQA, CUAD, IMDB, then 16-word
          windows of the same text), JSON lines.
       2. the packaged MiniLM exported int8 (scheme measured here), `embed --max-length 64 --precision float16`;
          SIGKILL once about 60% of the shards are on disk, then the same command again (it resumes).
       3. check: the store verifies, holds every corpus id once in corpus order, and a fresh embed of 2,000 of its
          rows (1,000 drawn, 1,000 around the resume point) gives the same vectors.
big    4. 10M rows (labelled synthetic): the real 1M vectors repeated 10 times with seeded Gaussian noise, written
          through `StoreWriter` (the writer `embed` uses), float16; model "a" with noise seed 1, model "b" with seed 2.
       5. `knn --sample 10000 --k 10` on each, `agree` between them: seconds and peak RSS per step.
       6. `knn --sample` on the real 1M store, local against `--backend ray --workers 2`: identical, time ratio.

    python benchmarks/bench_corpus.py --work /tmp/lookalike-corpus            → results/corpus-scale-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import load_average, save
from bench_scale import _MEASURED, corpus, run

K = 10
SHARD_ROWS = 10_000


def _embed_args(w: Path, corpus_path: Path, store: Path) -> list:
    return ["embed", w / "export-int8", corpus_path, store, "--max-length", "64", "--precision", "float16",
            "--shard-rows", SHARD_ROWS, "--no-progress"]


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM")), 0)
    except OSError:
        return 0


def _shards(store: Path) -> int:
    return len(list(store.glob("part-*.h5"))) if store.exists() else 0


def embed_stage(w: Path, n: int, out: dict) -> None:
    corpus_path = w / "corpus.jsonl"
    if not corpus_path.exists():
        out["corpus"] = corpus(n, corpus_path)
        print("corpus", out["corpus"], flush=True)
    if not (w / "export-int8" / "lookalike.json").exists():
        out["export_int8"] = {k: v for k, v in run("export", "minilm", w / "export-int8", "--quantize", "int8").items()
                              if k != "stdout"}
        print("export", out["export_int8"], flush=True)
    store = w / "store-1m"
    if not (store / "embeddings.h5").exists():
        total = -(-n // SHARD_ROWS)
        kill_at = int(total * 0.6)
        hwm = w / "first.hwm"
        t = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", _MEASURED, str(hwm), *map(str, _embed_args(w, corpus_path, store))],
                             stdout=subprocess.DEVNULL, stderr=open(w / "embed-first.log", "w"))
        peak_kb = 0
        while p.poll() is None and _shards(store) < kill_at:
            peak_kb = max(peak_kb, _hwm_kb(p.pid))
            time.sleep(1)
        first_s = time.perf_counter() - t
        p.send_signal(signal.SIGKILL)
        p.wait()
        done = _shards(store)
        print(f"killed after {first_s:.0f} s with {done} of {total} shards", flush=True)
        (w / "resume-row.json").write_text(str(done * SHARD_ROWS))
        r = run(*_embed_args(w, corpus_path, store))
        out["embed_1m"] = {"records": n, "model": "packaged all-MiniLM-L6-v2, int8 export, max length 64, float16 "
                                                  "store, CLS pooling (the default)",
                           "killed_after_s": round(first_s, 1), "shards_when_killed": done, "shards": total,
                           "first_run_peak_rss_mb": round(peak_kb / 1024, 1) or None,
                           "resume_seconds": r["seconds"], "resume_peak_rss_mb": r["peak_rss_mb"],
                           "seconds_total": round(first_s + r["seconds"], 1),
                           "rows_per_s": round(n / (first_s + r["seconds"]), 1)}
        print("embed", out["embed_1m"], flush=True)
    out["resume_check"] = resume_check(w, store, corpus_path, n)
    print("resume check", out["resume_check"], flush=True)


def resume_check(w: Path, store_path: Path, corpus_path: Path, n: int) -> dict:
    """The resumed store against the corpus (every id once, in corpus order), and its shards around the resume
    point plus one drawn shard against a fresh embed of exactly those rows: byte for byte, since a shard's batches
    depend on its rows alone (int8 activations are quantised per batch, so this is the comparison that can fail)."""
    from lookalike.core.store import open_store

    t = time.perf_counter()
    store = open_store(store_path)  # verifies every shard and that ids are unique
    verify_s = time.perf_counter() - t
    ids = store.ids
    with open(corpus_path) as fh:
        in_order = all(json.loads(line)["id"] == ids[i] for i, line in enumerate(fh)) and len(ids) == n
    first = int((w / "resume-row.json").read_text()) if (w / "resume-row.json").exists() else 0
    total = -(-n // SHARD_ROWS)
    drawn = int(np.random.default_rng(0).integers(0, total))
    shards = sorted({max(first // SHARD_ROWS - 1, 0), min(first // SHARD_ROWS, total - 1), drawn})
    report = {"verify_seconds": round(verify_s, 1), "every_id_once_in_corpus_order": bool(in_order),
              "resume_row": first, "shards_compared": shards, "identical": {}}
    for s in shards:
        lo, hi = s * SHARD_ROWS, min((s + 1) * SHARD_ROWS, n)
        sub = w / "check.jsonl"
        with open(corpus_path) as src, open(sub, "w") as dst:
            for i, line in enumerate(src):
                if lo <= i < hi:
                    dst.write(line)
        fresh_path = w / "store-check"
        shutil.rmtree(fresh_path, ignore_errors=True)
        run(*_embed_args(w, sub, fresh_path))
        fresh = open_store(fresh_path)
        a, b = store.vectors_between(lo, hi), fresh.embeddings()
        report["identical"][f"rows {lo}..{hi}"] = bool(np.array_equal(a, b) and list(fresh.ids) == list(ids[lo:hi]))
        shutil.rmtree(fresh_path, ignore_errors=True)
    return report


def synthetic(w: Path, name: str, seed: int, repeats: int) -> dict:
    """10M rows: the real 1M vectors repeated with seeded noise, written by StoreWriter (embed's writer)."""
    from lookalike.core.store import StoreWriter, open_store

    out = w / f"store-10m-{name}"
    if (out / "embeddings.h5").exists():
        return {}
    real = open_store(w / "store-1m")
    config = dict(real.config)
    config["model_sha256"] = f"synthetic-{name}-" + str(config.get("model_sha256", ""))[:16]
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = len(real)
    with StoreWriter(out, config, real.dim, SHARD_ROWS * 4) as wr:
        for rep in range(repeats):
            for lo, block in real.iter_blocks(SHARD_ROWS * 4):
                noisy = block + rng.normal(0, 0.02, block.shape).astype(np.float32)
                ids = [f"s{rep}-{i}" for i in range(lo, lo + len(block))]
                wr.append(ids, noisy.astype(np.float16), np.full(len(block), 16, np.int32),
                          np.zeros(len(block), bool))
        wr.finalize()
    return {"rows": n * repeats, "seconds_to_write": round(time.perf_counter() - t, 1),
            "disk_gb": round(sum(f.stat().st_size for f in out.iterdir()) / 1e9, 2)}


def big_stage(w: Path, out: dict, m: int, repeats: int) -> None:
    synth = {name: synthetic(w, name, seed, repeats) for name, seed in (("a", 1), ("b", 2))}
    out["synthetic_10m"] = {"what": f"synthetic: the real 1M MiniLM int8 vectors repeated {repeats} times with "
                                    "seeded Gaussian noise (sigma 0.02 per dimension), model a seed 1, model b "
                                    "seed 2; float16 stores", "written": synth}
    print("synthetic", synth, flush=True)
    steps = {}
    for name in ("a", "b"):
        r = run("knn", w / f"store-10m-{name}", w / f"10m-{name}.knn.h5", "--k", K, "--sample", m,
                "--sample-seed", 0)
        steps[f"knn_sample_{name}"] = {"seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"]}
        print(name, steps[f"knn_sample_{name}"], flush=True)
    r = run("agree", "--knn", f"a={w / '10m-a.knn.h5'}", "--knn", f"b={w / '10m-b.knn.h5'}", "--k", K,
            "--format", "json")
    row = json.loads(r["stdout"])[0]
    steps["agree"] = {"seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
                      "mean_jaccard": row["repr_mean"], "interval": [row["repr_mean_lo"], row["repr_mean_hi"]],
                      "basis": row.get("repr_basis")}
    steps["open_and_verify"] = _measured_python(
        f"from lookalike.core.store import open_store; s = open_store({str(w / 'store-10m-a')!r}); print(len(s))")
    out_npy = w / "export-10m-a"
    r = run("export-store", w / "store-10m-a", out_npy, "--format", "npy")
    steps["export_store_npy"] = {"seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
                                 "disk_gb": round(sum(f.stat().st_size for f in out_npy.iterdir()) / 1e9, 2)}
    shutil.rmtree(out_npy, ignore_errors=True)
    out["synthetic_10m"]["steps"] = steps
    print("10m", steps, flush=True)

    local = run("knn", w / "store-1m", w / "local.knn.h5", "--k", K, "--sample", m)
    ray = run("knn", w / "store-1m", w / "ray.knn.h5", "--k", K, "--sample", m, "--backend", "ray", "--workers", 2)
    from lookalike.analysis.knn import load_knn

    identical = load_knn(w / "local.knn.h5").content_sha256() == load_knn(w / "ray.knn.h5").content_sha256()
    out["ray_1m"] = {"m": m, "local_seconds": local["seconds"], "local_peak_rss_mb": local["peak_rss_mb"],
                     "ray_seconds": ray["seconds"], "ray_over_local_time": round(ray["seconds"] / local["seconds"], 2),
                     "identical": identical, "note": "a local Ray of 2 workers on the same 2 cores, its start included"}
    print("ray", out["ray_1m"], flush=True)


def _measured_python(code: str) -> dict:
    """Seconds and peak RSS of a Python snippet in a child process."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code + "\nimport resource; print(resource.getrusage("
                        "resource.RUSAGE_SELF).ru_maxrss)"], capture_output=True, text=True, check=True)
    return {"seconds": round(time.perf_counter() - t, 2),
            "peak_rss_mb": round(int(p.stdout.split()[-1]) / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--m", type=int, default=10_000, help="points drawn per sampled run")
    ap.add_argument("--repeats", type=int, default=10, help="copies of the real vectors in the big store")
    ap.add_argument("--stage", choices=["embed", "big", "all"], default="all")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lookalike-corpus")
    args = ap.parse_args()
    global SHARD_ROWS
    SHARD_ROWS = min(SHARD_ROWS, max(args.n // 20, 100))
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    os.environ["LOOKALIKE_CACHE"] = str(w / "cache")
    partial = w / "partial.json"
    out = json.loads(partial.read_text()) if partial.exists() else {"n": args.n, "k": K, "m": args.m}
    out.setdefault("load_before", load_average())
    print("df:", shutil.disk_usage(w).free // 2**30, "GiB free", flush=True)
    if args.stage in ("embed", "all"):
        embed_stage(w, args.n, out)
        partial.write_text(json.dumps(out))
    if args.stage in ("big", "all"):
        big_stage(w, out, args.m, args.repeats)
        partial.write_text(json.dumps(out))
    out["load_after"] = load_average()
    out["load_note"] = "1-minute load averages; other work on this 2-core machine slows every step alike"
    save("corpus-scale-cpu", out)


if __name__ == "__main__":
    main()
