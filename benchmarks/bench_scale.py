"""Agreement at corpus scale: a real embed of short texts, exhaustive against sampled neighbours, coverage of the
sampled interval, peak memory, and Ray against the local runner, in one run on this machine.

Stages (each a real `lookalike` command in a child process, its wall time and peak RSS measured; outputs kept in
--work so a re-run skips finished stages):

1. corpus: N short texts from ../shared/data (sentences of SQuAD train paragraphs, NewsQA stories, CUAD contracts
   and IMDB reviews; then 16-word windows of the same text, stride 8, then offset 4, until N), written as JSON lines.
2. embed: the packaged MiniLM exported twice, fp32 and int8 (scheme measured here), both embedding the corpus
   (max length 64, float16 stores): the two "models" compared.
3. knn exhaustive on both, and `agree`: the all-points mean Jaccard (K=10).
4. coverage: `knn --sample M` on both for 20 seeds, `agree` each: how often the exhaustive mean lies in the
   sampled 95% interval; the time of a sampled run against the exhaustive one.
5. memory: peak RSS of the exhaustive and the sampled search, the store searched from disk too
   (LOOKALIKE_KNN_MEMORY_MB=0).
6. ray: `knn --sample` local against `--backend ray --workers 2` (a local Ray): identical files, time ratio.

    python benchmarks/bench_scale.py --n 100000 --work /tmp/lookalike-scale      → results/scale-cpu.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED, load_average, save

K = 10
SEEDS = 20

_MEASURED = r"""
import os, sys, runpy
hwm = sys.argv[1]
sys.argv = ["lookalike"] + sys.argv[2:]
code = 0
try:
    from lookalike.cli import main
    main()
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
finally:
    with open("/proc/self/status") as f:
        kb = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
    open(hwm, "w").write(str(kb))
sys.exit(code)
"""


def run(*args, env=None) -> dict:
    """A lookalike command in a child process: wall seconds, peak RSS (MB), stdout."""
    with tempfile.NamedTemporaryFile(suffix=".hwm") as hwm:
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", _MEASURED, hwm.name, *map(str, args)], capture_output=True,
                           text=True, env={**os.environ, **(env or {})})
        seconds = time.perf_counter() - t
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(map(str, args))} failed: {p.stderr[-2000:]}")
        peak = int(Path(hwm.name).read_text() or 0) / 1024
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1), "stdout": p.stdout}


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 20 <= len(s.strip()) <= 400]


def corpus(n: int, path: Path) -> dict:
    from lookalike.data import read_corpus

    sources: dict[str, list[str]] = {}
    with gzip.open(SHARED / "squad1_train" / "train-v1.1-explorer.json.gz", "rt") as fh:
        squad = json.load(fh)
    sources["squad-train"] = [s for a in squad["data"] for p in a["paragraphs"] for s in sentences(p["context"])]
    news = json.loads((SHARED / "newsqa" / "newsqa_dev_robustqa.json").read_text())
    sources["newsqa"] = [s for a in news["data"] for p in a["paragraphs"] for s in sentences(p["context"])]
    cuad = json.loads((SHARED / "cuad500" / "queries.json").read_text())["queries"]
    sources["cuad"] = list(dict.fromkeys(s for q in cuad for s in sentences(q["context"])))
    sources["imdb"] = [s for f in ("imdb_train_5k.tsv", "imdb_test_2k.tsv")
                       for r in read_corpus(SHARED / "imdb" / f) for s in sentences(r.text.replace("<br />", " "))]
    texts, counts = [], {}
    for name, items in sources.items():
        unique = list(dict.fromkeys(items))
        counts[name] = len(unique)
        texts += unique
    if len(texts) < n:  # then 16-word windows of the same text, stride 8, then the windows between (offset 4)
        words = " ".join(texts).split()
        for offset, label in ((0, "16-word windows of the above"), (4, "16-word windows between those")):
            windows = (" ".join(words[i:i + 16]) for i in range(offset, len(words) - 16, 8))
            extra = [w for w, _ in zip(windows, range(n - len(texts)))]
            if extra:
                counts[label] = len(extra)
            texts += extra
    texts = texts[:n]
    with open(path, "w") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": f"r{i}", "text": t}) + "\n")
    return {"records": len(texts), "by_source": counts}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--m", type=int, default=2000, help="points drawn per sampled run")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lookalike-scale")
    ap.add_argument("--keep", action="store_true", help="keep --work (default: removed at the end)")
    args = ap.parse_args()
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    out: dict = {"n": args.n, "k": K, "m": args.m, "work": str(w), "load_before": load_average()}
    cache = w / "cache"
    env = {"LOOKALIKE_CACHE": str(cache)}
    os.environ.update(env)
    print("df:", shutil.disk_usage(w).free // 2**30, "GiB free")

    if not (w / "corpus.jsonl").exists():
        out["corpus"] = corpus(args.n, w / "corpus.jsonl")
    models = {"fp32": [], "int8": ["--quantize", "int8"]}
    for name, flags in models.items():
        if not (w / f"export-{name}" / "lookalike.json").exists():
            out[f"export_{name}"] = {k: v for k, v in run("export", "minilm", w / f"export-{name}", *flags).items()
                                     if k != "stdout"}
        if not (w / f"store-{name}" / "embeddings.h5").exists():
            r = run("embed", w / f"export-{name}", w / "corpus.jsonl", w / f"store-{name}", "--max-length", "64",
                    "--precision", "float16", "--shard-rows", "50000", env=env)
            out[f"embed_{name}"] = {"seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
                                    "rows_per_s": round(args.n / r["seconds"], 1)}
            print("embed", name, out[f"embed_{name}"])

    ex = {}
    for name in models:
        r = run("knn", w / f"store-{name}", w / f"{name}.knn.h5", "--k", K)
        ex[name] = {"seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"]}
    r = run("agree", "--knn", f"fp32={w / 'fp32.knn.h5'}", "--knn", f"int8={w / 'int8.knn.h5'}", "--k", K,
            "--format", "json", "--reps", "0")
    exhaustive = json.loads(r["stdout"])[0]["repr_mean"]
    out["exhaustive"] = {"mean_jaccard": exhaustive, "knn": ex}
    print("exhaustive", out["exhaustive"])

    hits, runs = 0, []
    for seed in range(SEEDS):
        times = {}
        for name in models:
            r = run("knn", w / f"store-{name}", w / f"{name}-s{seed}.knn.h5", "--k", K, "--sample", args.m,
                    "--sample-seed", seed)
            times[name] = {"seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"]}
        r = run("agree", "--knn", f"fp32={w / f'fp32-s{seed}.knn.h5'}", "--knn", f"int8={w / f'int8-s{seed}.knn.h5'}",
                "--k", K, "--format", "json")
        row = json.loads(r["stdout"])[0]
        inside = row["repr_mean_lo"] <= exhaustive <= row["repr_mean_hi"]
        hits += inside
        runs.append({"seed": seed, "mean": row["repr_mean"], "lo": row["repr_mean_lo"], "hi": row["repr_mean_hi"],
                     "covers": bool(inside), "knn": times})
        for name in models:
            (w / f"{name}-s{seed}.knn.h5").unlink()
    sampled_s = sum(r["knn"]["fp32"]["seconds"] for r in runs) / len(runs)
    out["coverage"] = {"seeds": SEEDS, "covered": hits, "target": ">= 18 of 20", "runs": runs,
                       "sampled_knn_seconds_mean": round(sampled_s, 2),
                       "exhaustive_over_sampled_time": round(ex["fp32"]["seconds"] / sampled_s, 2)}
    print("coverage", hits, "of", SEEDS)

    r = run("knn", w / "store-fp32", w / "disk.knn.h5", "--k", K, env={"LOOKALIKE_KNN_MEMORY_MB": "0"})
    same = json.loads(run("agree", "--knn", f"a={w / 'fp32.knn.h5'}", "--knn", f"b={w / 'disk.knn.h5'}", "--k", K,
                          "--format", "json", "--reps", "0")["stdout"])[0]["repr_mean"] == 1.0
    out["from_disk"] = {"seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"], "same_neighbours": same}
    print("from disk", out["from_disk"])

    local = run("knn", w / "store-fp32", w / "local.knn.h5", "--k", K, "--sample", args.m)
    ray = run("knn", w / "store-fp32", w / "ray.knn.h5", "--k", K, "--sample", args.m, "--backend", "ray",
              "--workers", "2")
    from lookalike.analysis.knn import load_knn

    identical = load_knn(w / "local.knn.h5").content_sha256() == load_knn(w / "ray.knn.h5").content_sha256()
    out["ray"] = {"local_seconds": local["seconds"], "ray_seconds": ray["seconds"],
                  "ray_over_local_time": round(ray["seconds"] / local["seconds"], 2), "identical": identical,
                  "note": "a local Ray of 2 workers on the same 2 cores, its start included"}
    print("ray", out["ray"])
    out["disk_mb"] = {p.name: round(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20, 1)
                      for p in w.iterdir() if p.is_dir() and p.name.startswith("store-")}
    out["load_after"] = load_average()
    out["load_note"] = ("1-minute load average before and after: other work on this 2-core machine slows every "
                        "stage alike; compare the ratios, not the seconds, across machines")
    save("scale-cpu", out)
    if not args.keep:
        shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
