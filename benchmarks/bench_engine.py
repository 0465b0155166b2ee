"""Engine throughput against the peers, one run, same corpus (~2,000 real records), same model (packaged MiniLM).

Peers: (a) transformers PyTorch eager, fixed unsorted batches (the pipeline way); (b) length-sorted PyTorch
batches (sentence-transformers' encode, the real library); (c) optimum's ORTModelForFeatureExtraction in a
plain loop; (d) lookalike's engine fp32 (fused, the default export, and unfused) and int8. Also: achieved FLOP/s vs this machine's measured GEMM
ceiling, and peak RSS when embedding 10x more rows. Results: benchmarks/results/engine-<device>.json.

    python benchmarks/bench_engine.py [--limit N] [--max-length 256] [--repeats 2] [--skip-memory]
    python benchmarks/bench_engine.py --st-onnx --fastembed --repeats 3 --skip-memory --out engine-peers-cpu

The machine's load (`uptime`'s 1/5/15-minute averages) is recorded before and after; with `--max-load` the run
first waits for the 1-minute load to fall below it, and the file says whether it did (`load_before.idle`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# TOKENIZERS_PARALLELISM is left as the user has it (unset: the Rust tokenizer batches in parallel, every
# library's default); `lookalike_fp32_serial_tokenizer` sets it to false for its own run

from _common import (OthersLoad, Timer, load_average, real_corpus, save, torch_loop,  # noqa: E402
                     wait_for_idle, work_dir, write_corpus)

# peak RSS from VmHWM: ru_maxrss would report this (large) parent's peak, inherited through fork + exec
MEMORY_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[5])
from _common import peak_rss_mb
from lookalike.data import CorpusSpec
from lookalike.engine import embed
from lookalike.params import EmbedParams
stats = embed(sys.argv[1], CorpusSpec(sys.argv[2], id_field="id"), sys.argv[3],
              EmbedParams(max_length=int(sys.argv[4]), shard_rows=1000), progress=False)
print(json.dumps({"rows": stats["rows"], "peak_rss_mb": peak_rss_mb()}))
"""


def sentence_transformers_encode(model_dir, texts, max_length, batch_size):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    st.max_seq_length = max_length
    with Timer() as t:
        st.encode(texts, batch_size=batch_size, show_progress_bar=False)
    return {"seconds": t.seconds}


def fastembed_model(export_dir, max_length):
    """fastembed 0.9.1 on a local (plain, unfused) export with CLS pooling: its documented custom-model route."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = "lookalike/minilm-cls-plain"
    if name not in [m["model"] for m in TextEmbedding.list_supported_models()]:
        TextEmbedding.add_custom_model(model=name, pooling=PoolingType.CLS, normalization=False,
                                       sources=ModelSource(hf=name), dim=384, model_file="model.onnx",
                                       output_name="last_hidden_state")
    te = TextEmbedding(name, specific_model_path=str(export_dir), threads=os.cpu_count())
    te.model.tokenizer.enable_truncation(max_length=max_length)
    return te


def fastembed_encode(export_dir, texts, max_length, batch_size):
    te = fastembed_model(export_dir, max_length)
    list(te.embed(texts[:8], batch_size=8))  # warm-up
    with Timer() as t:
        out = list(te.embed(texts, batch_size=batch_size))
    return {"seconds": t.seconds, "n": len(out)}


def st_onnx_folder(src, work: Path) -> tuple[Path, dict[str, str]]:
    """sentence-transformers' own ONNX backends on the packaged MiniLM: its plain export, its O3 optimisation and
    its dynamic int8 quantisation for this CPU ({peer name: file name} in one folder). The packaged config has no
    `model_type`, which optimum's export needs: a copy gets `"model_type": "bert"`."""
    import shutil

    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    from lookalike.core.cpu import cpu_info

    copy = work / "st-src"
    shutil.copytree(src, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg.setdefault("model_type", "bert")
    (copy / "config.json").write_text(json.dumps(cfg))
    out = work / "st-onnx"
    st = SentenceTransformer(str(copy), backend="onnx", device="cpu")  # exported by optimum, on the fly
    st.save_pretrained(str(out))
    export_optimized_onnx_model(st, "O3", str(out))
    flags = str(cpu_info().get("isa", "")).lower()
    q = "avx512_vnni" if "vnni" in flags and "avx512" in flags else ("avx512" if "avx512" in flags else "avx2")
    export_dynamic_quantized_onnx_model(st, q, str(out))
    qfile = next(p.name for p in (out / "onnx").iterdir() if p.name.startswith("model_q"))
    return out, {"st_onnx": "onnx/model.onnx", "st_onnx_O3": "onnx/model_O3.onnx", f"st_onnx_int8_{q}": f"onnx/{qfile}"}


def st_backend_encode(folder, file_name, texts, max_length, batch_size):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), backend="onnx", device="cpu", model_kwargs={"file_name": file_name})
    st.max_seq_length = max_length
    st.encode(texts[:8], batch_size=8)  # warm-up
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


def model_gemm_gflops(manifest: dict, rows: int = 1024, repeat: int = 20, threads: int | None = None) -> dict:
    """ORT MatMul rates at a BERT layer's own GEMM shapes (rows x hidden @ hidden x {h, 3h, 4h}, 4h x h).

    A second reference beside the square ceiling: MLAS can run these faster than 1024^3 on some CPUs.
    """
    h = int(manifest["hidden_size"])
    ff = int(manifest.get("intermediate_size") or 4 * h)
    shapes = {"qkv": (rows, h, 3 * h), "attn_out": (rows, h, h), "ffn_in": (rows, h, ff), "ffn_out": (rows, ff, h)}
    import time

    from lookalike.engine.bench import _ort_gemm_gflops

    rates = {}
    for name, shape in shapes.items():
        time.sleep(0.3)  # the previous session's spinning threads
        rates[name] = _ort_gemm_gflops(shape, repeat, threads)
    return rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of every throughput run; the best is reported")
    ap.add_argument("--memory-only", action="store_true", help="re-measure only peak RSS into engine-cpu.json")
    ap.add_argument("--st-onnx", action="store_true",
                    help="add sentence-transformers' ONNX, ONNX-O3 and ONNX-int8 backends as peers")
    ap.add_argument("--fastembed", action="store_true", help="add fastembed (pip install -e '.[bench]') as a peer")
    ap.add_argument("--max-load", type=float, default=None,
                    help="wait (up to 10 min) for the 1-minute load to fall below this before measuring")
    ap.add_argument("--out", default="engine-cpu", help="results file name under benchmarks/results/")
    args = ap.parse_args()
    if args.fastembed and not importlib.util.find_spec("fastembed"):
        ap.error("--fastembed: fastembed is not installed (pip install -e '.[bench]')")
    if args.memory_only:
        return memory_only(args)

    import torch

    from lookalike.data import CorpusSpec
    from lookalike.engine import OnnxModel, embed
    from lookalike.engine.bench import flops_per_token, matmul_ceiling_gflops
    from lookalike.exporters import export, load_manifest
    from lookalike.models import minilm_path
    from lookalike.params import EmbedParams

    ceiling = matmul_ceiling_gflops()  # first, on a quiet process (spinning thread pools skew it)
    torch.set_num_threads(os.cpu_count() or 1)
    work = work_dir("lookalike-bench-")
    rows = real_corpus(args.limit)
    texts = [r["text"] for r in rows]
    corpus = write_corpus(rows, work / "corpus.jsonl")
    src = minilm_path()
    fp32 = work / "fp32"
    plain = work / "fp32-plain"
    int8 = work / "int8"
    export(str(src), fp32)  # the default: ORT Attention/BiasGelu fusions
    export(str(src), plain, optimize=False)  # the unfused graph, to show what the fusions give
    export(str(src), int8, quantize="int8")  # fused too (the default), scheme measured on this CPU
    ceiling = max(ceiling, matmul_ceiling_gflops())
    config = json.loads((fp32 / "config.json").read_text())
    shape_rates = model_gemm_gflops({**load_manifest(fp32), "intermediate_size": config.get("intermediate_size")})
    results = {"corpus_records": len(rows), "max_length": args.max_length, "batch_size_peers": args.batch_size,
               "model": "all-MiniLM-L6-v2 (packaged)", "gemm_ceiling_gflops": ceiling,
               "gemm_at_model_shapes_gflops": shape_rates,
               "repeats": args.repeats, "statistic": "best round of each run (runs interleaved round-robin)",
               "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "unset (parallel)")}
    runs = {}

    # Every throughput run is a closure returning seconds; they run round-robin, `--repeats` rounds, so a noisy
    # neighbour hits all of them alike, and each one's best round is its figure (as the ceiling's is).
    import shutil

    from lookalike.engine import open_store

    def engine_run(name, model_dir, m):
        def run():
            out = work / f"store-{name}"
            shutil.rmtree(out, ignore_errors=True)
            stats = embed(model_dir, CorpusSpec(corpus, id_field="id"), out, EmbedParams(max_length=args.max_length),
                          progress=False, model=m)
            runs[name].update(variant=m.manifest["variant"]["description"], padding_overhead=stats["padding_overhead"],
                              n_truncated=stats["n_truncated"])
            return stats["seconds"]
        return run

    todo = {}
    models = {}
    for name, model_dir in (("lookalike_fp32", fp32), ("lookalike_fp32_unfused", plain), ("lookalike_int8", int8)):
        models[name] = OnnxModel(model_dir)
        todo[name] = engine_run(name, model_dir, models[name])

    # the engine leaves the Rust tokenizer's batch parallelism at its default (on); the same run with it off
    def serial_tokenizer(run):
        def go():
            before = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            try:
                return run()
            finally:
                os.environ.pop("TOKENIZERS_PARALLELISM") if before is None else os.environ.update(
                    TOKENIZERS_PARALLELISM=before)
        return go

    runs["lookalike_fp32_serial_tokenizer"] = {}
    todo["lookalike_fp32_serial_tokenizer"] = serial_tokenizer(engine_run("lookalike_fp32_serial_tokenizer", fp32,
                                                                          models["lookalike_fp32"]))
    if not args.skip_peers:
        todo["torch_eager_unsorted"] = lambda: torch_loop(src, texts, args.max_length, args.batch_size, sort=False)["seconds"]
        todo["torch_eager_sorted"] = lambda: torch_loop(src, texts, args.max_length, args.batch_size, sort=True)["seconds"]
        if importlib.util.find_spec("sentence_transformers"):
            todo["sentence_transformers_encode"] = lambda: sentence_transformers_encode(
                src, texts, args.max_length, args.batch_size)["seconds"]
        # optimum users export without fusions
        todo["optimum_ort_loop"] = lambda: optimum_loop(plain, texts, args.max_length, args.batch_size)["seconds"]
        if args.fastembed:
            todo["fastembed"] = lambda: fastembed_encode(plain, texts, args.max_length, args.batch_size)["seconds"]
        if args.st_onnx and importlib.util.find_spec("sentence_transformers"):
            st_dir, st_files = st_onnx_folder(src, work)
            for name, file_name in st_files.items():
                todo[name] = (lambda f: lambda: st_backend_encode(st_dir, f, texts, args.max_length,
                                                                   args.batch_size)["seconds"])(file_name)
    for name in todo:
        runs[name] = {"seconds_each_round": []}
    results["load_before"] = wait_for_idle(args.max_load) if args.max_load else load_average()
    with OthersLoad() as during:
        for _ in range(args.repeats):
            for name, fn in todo.items():
                runs[name]["seconds_each_round"].append(fn())
                print(name, round(runs[name]["seconds_each_round"][-1], 2), flush=True)
    results["load_during"] = during.result
    # the 1-minute average right after holds this run's own work; it settles below the bound within minutes on a
    # machine nobody else is using (and `load_after.idle` says whether it did)
    results["load_after"] = wait_for_idle(args.max_load, timeout_s=300) if args.max_load else load_average()
    lengths = open_store(work / "store-lookalike_fp32").n_tokens
    real_tokens = int(lengths.sum())
    flops = float(sum(flops_per_token(models["lookalike_fp32"].manifest, int(L)) * int(L) for L in lengths))
    for name, r in runs.items():
        r["seconds"] = min(r["seconds_each_round"])
        r["real_tokens_per_s"] = real_tokens / r["seconds"]
        if name.startswith("lookalike_fp32"):
            r["achieved_gflops"] = flops / r["seconds"] / 1e9
            r["fraction_of_gemm_ceiling"] = r["achieved_gflops"] / ceiling
            r["fraction_of_best_model_shape_gemm"] = r["achieved_gflops"] / max(shape_rates.values())
    results["real_tokens"] = real_tokens
    results["runs"] = runs
    eng = runs["lookalike_fp32"]["real_tokens_per_s"]
    ratios = {"int8_vs_fp32_engine": runs["lookalike_int8"]["real_tokens_per_s"] / eng,
              "fp32_fraction_of_gemm_ceiling": runs["lookalike_fp32"]["fraction_of_gemm_ceiling"],
              "fp32_fraction_of_best_model_shape_gemm": runs["lookalike_fp32"]["fraction_of_best_model_shape_gemm"],
              "fp32_fused_vs_unfused": eng / runs["lookalike_fp32_unfused"]["real_tokens_per_s"],
              "fp32_unfused_fraction_of_gemm_ceiling": runs["lookalike_fp32_unfused"]["fraction_of_gemm_ceiling"]}
    ratios["fp32_parallel_vs_serial_tokenizer"] = eng / runs["lookalike_fp32_serial_tokenizer"]["real_tokens_per_s"]
    for peer in ("torch_eager_unsorted", "torch_eager_sorted", "sentence_transformers_encode", "optimum_ort_loop",
                 "fastembed", *(n for n in runs if n.startswith("st_onnx"))):
        if peer in runs:
            ratios[f"engine_fp32_vs_{peer}"] = eng / runs[peer]["real_tokens_per_s"]
    results["ratios"] = ratios

    if not args.skip_memory:
        results["memory"] = measure_memory(int8, rows, work)
        ratios["peak_rss_growth_10x_rows"] = results["memory"]["peak_rss_growth"]
    print(json.dumps(ratios, indent=2))
    save(args.out, results)


def measure_memory(model_dir, rows, work) -> dict:
    """Peak RSS embedding 1x and 10x the rows, each in a fresh process (int8 export, max length 64)."""
    mem = {}
    for mult in (1, 10):
        big = [{"id": f"{i}-{r['id']}", "text": r["text"]} for i in range(mult) for r in rows]
        path = write_corpus(big, work / f"mem-{mult}.jsonl")
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(model_dir), str(path), str(work / f"mem-{mult}"),
                              "64", str(Path(__file__).resolve().parent)], capture_output=True, text=True, check=True)
        mem[f"x{mult}"] = json.loads(out.stdout.strip().splitlines()[-1])
        print("memory", mult, mem[f"x{mult}"], flush=True)
    mem["peak_rss_growth"] = mem["x10"]["peak_rss_mb"] / mem["x1"]["peak_rss_mb"] - 1
    return mem


def memory_only(args):
    """Re-measure only the memory section of an existing engine-cpu.json (the throughput runs are kept)."""
    import time

    from _common import RESULTS

    from lookalike.exporters import export
    from lookalike.models import minilm_path

    path = RESULTS / "engine-cpu.json"
    results = json.loads(path.read_text())
    work = work_dir("lookalike-bench-")
    export(str(minilm_path()), work / "int8", quantize="int8", per_channel=True)
    results["memory"] = measure_memory(work / "int8", real_corpus(args.limit), work)
    results["memory_when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["ratios"]["peak_rss_growth_10x_rows"] = results["memory"]["peak_rss_growth"]
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["memory"], indent=2))


if __name__ == "__main__":
    main()
