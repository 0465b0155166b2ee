"""Engine throughput against the peers, one run, same corpus (~2,000 real records), same model (packaged MiniLM).

Peers: (a) transformers PyTorch eager, fixed unsorted batches (the pipeline way); (b) length-sorted PyTorch
batches (sentence-transformers' encode, the real library); (c) optimum's ORTModelForFeatureExtraction in a
plain loop; (d) lookalike's engine fp32 and int8. Also: achieved FLOP/s vs this machine's measured GEMM
ceiling, and peak RSS when embedding 10x more rows. Results: benchmarks/results/engine-<device>.json.

    python benchmarks/bench_engine.py [--limit N] [--max-length 256] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import Timer, real_corpus, save, torch_loop, write_corpus  # noqa: E402

MEMORY_CHILD = """
import json, sys, resource
from lookalike.engine import embed
stats = embed(sys.argv[1], sys.argv[2], sys.argv[3], id_field="id", max_length=int(sys.argv[4]), shard_rows=1000,
              progress=False)
print(json.dumps({"rows": stats["rows"], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def sentence_transformers_encode(model_dir, texts, max_length, batch_size):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    st.max_seq_length = max_length
    with Timer() as t:
        st.encode(texts, batch_size=batch_size, show_progress_bar=False)
    return {"seconds": t.seconds}


def optimum_loop(export_dir, texts, max_length, batch_size):
    import transformers
    from optimum.onnxruntime import ORTModelForFeatureExtraction

    tok = transformers.AutoTokenizer.from_pretrained(export_dir)
    model = ORTModelForFeatureExtraction.from_pretrained(export_dir)
    with Timer() as t:
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            model(**enc).last_hidden_state[:, 0]
    return {"seconds": t.seconds}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-peers", action="store_true")
    args = ap.parse_args()

    import torch

    from lookalike.engine import OnnxModel, embed
    from lookalike.engine.bench import flops_per_token, matmul_ceiling_gflops
    from lookalike.exporters import export
    from lookalike.models import minilm_path

    ceiling = matmul_ceiling_gflops()  # first, on a quiet process (spinning thread pools skew it)
    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(tempfile.mkdtemp(prefix="lookalike-bench-"))
    rows = real_corpus(args.limit)
    texts = [r["text"] for r in rows]
    corpus = write_corpus(rows, work / "corpus.jsonl")
    src = minilm_path()
    fp32 = work / "fp32"
    int8 = work / "int8"
    export(str(src), fp32)
    export(str(src), int8, quantize="int8", per_channel=True)
    ceiling = max(ceiling, matmul_ceiling_gflops())
    results = {"corpus_records": len(rows), "max_length": args.max_length, "batch_size_peers": args.batch_size,
               "model": "all-MiniLM-L6-v2 (packaged)", "gemm_ceiling_gflops": ceiling}
    runs = {}

    # lookalike engine: fp32 and int8 (store written to disk, as users run it)
    for name, model_dir in (("lookalike_fp32", fp32), ("lookalike_int8", int8)):
        m = OnnxModel(model_dir)
        stats = embed(model_dir, corpus, work / f"store-{name}", id_field="id", max_length=args.max_length,
                      progress=False, model=m)
        runs[name] = {"seconds": stats["seconds"], "real_tokens_per_s": stats["real_tokens_per_s"],
                      "padding_overhead": stats["padding_overhead"], "n_truncated": stats["n_truncated"]}
        if name == "lookalike_fp32":
            from lookalike.engine import open_store

            lengths = open_store(work / f"store-{name}").n_tokens
            real_tokens = int(lengths.sum())
            flops = float(sum(flops_per_token(m.manifest, int(L)) * int(L) for L in lengths))
            runs[name]["achieved_gflops"] = flops / stats["seconds"] / 1e9
            runs[name]["fraction_of_gemm_ceiling"] = runs[name]["achieved_gflops"] / ceiling
        print(name, json.dumps(runs[name]))
    results["real_tokens"] = real_tokens
    if not args.skip_peers:
        r = torch_loop(src, texts, args.max_length, args.batch_size, sort=False)
        runs["torch_eager_unsorted"] = {"seconds": r["seconds"], "real_tokens_per_s": real_tokens / r["seconds"]}
        print("torch_eager_unsorted", runs["torch_eager_unsorted"])
        r = torch_loop(src, texts, args.max_length, args.batch_size, sort=True)
        runs["torch_eager_sorted"] = {"seconds": r["seconds"], "real_tokens_per_s": real_tokens / r["seconds"]}
        print("torch_eager_sorted", runs["torch_eager_sorted"])
        try:
            r = sentence_transformers_encode(src, texts, args.max_length, args.batch_size)
            runs["sentence_transformers_encode"] = {"seconds": r["seconds"], "real_tokens_per_s": real_tokens / r["seconds"]}
            print("sentence_transformers_encode", runs["sentence_transformers_encode"])
        except ImportError:
            pass
        r = optimum_loop(fp32, texts, args.max_length, args.batch_size)
        runs["optimum_ort_loop"] = {"seconds": r["seconds"], "real_tokens_per_s": real_tokens / r["seconds"]}
        print("optimum_ort_loop", runs["optimum_ort_loop"])
    results["runs"] = runs
    eng = runs["lookalike_fp32"]["real_tokens_per_s"]
    ratios = {"int8_vs_fp32_engine": runs["lookalike_int8"]["real_tokens_per_s"] / eng,
              "fp32_fraction_of_gemm_ceiling": runs["lookalike_fp32"]["fraction_of_gemm_ceiling"]}
    for peer in ("torch_eager_unsorted", "torch_eager_sorted", "sentence_transformers_encode", "optimum_ort_loop"):
        if peer in runs:
            ratios[f"engine_fp32_vs_{peer}"] = eng / runs[peer]["real_tokens_per_s"]
    results["ratios"] = ratios

    if not args.skip_memory:  # peak RSS, 1x vs 10x rows, separate processes, int8, short inputs
        mem = {}
        for mult in (1, 10):
            big = [{"id": f"{i}-{r['id']}", "text": r["text"]} for i in range(mult) for r in rows]
            path = write_corpus(big, work / f"mem-{mult}.jsonl")
            out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(int8), str(path), str(work / f"mem-{mult}"),
                                  "64"], capture_output=True, text=True, check=True)
            mem[f"x{mult}"] = json.loads(out.stdout.strip().splitlines()[-1])
        mem["peak_rss_growth"] = mem["x10"]["peak_rss_mb"] / mem["x1"]["peak_rss_mb"] - 1
        results["memory"] = mem
        ratios["peak_rss_growth_10x_rows"] = mem["peak_rss_growth"]
    print(json.dumps(ratios, indent=2))
    save("engine-cpu", results)


if __name__ == "__main__":
    main()
