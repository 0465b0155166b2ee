"""The CUDA path, checked and measured on a GPU machine: ONNX Runtime's CUDA provider through the engine.

What it does, per model shape (MiniLM-L6-shaped 6x384 and BERT-base-shaped 12x768, random weights with a
real WordPiece vocab, so no download is needed; throughput does not depend on the weights):
  1. export fp32 and the --fp16 variant with lookalike's exporter (default fusions, and --no-optimize);
  2. embed the same real-text corpus with the engine on cuda (fp32, fp16; fused and plain) and on cpu (fp32);
  3. parity: max |diff| and min cosine of CLS vectors, cuda fp32 vs cpu fp32 and cuda fp16 vs cuda fp32;
  4. peers on the same GPU: transformers PyTorch eager, unsorted fp32 batches (the pipeline way) and
     length-sorted fp16 batches (sentence-transformers' encode strategy);
  5. `lookalike bench` latency grid on cuda;
  6. host never the limit: the engine end to end from a token cache vs the same batches run back to back on the
     device (isolated rate), per batch budget (the batch-shape policy), and the fraction of --peak-tflops.
Ratios against the peers are the result; the JSON also records the GPU name and library versions.

    python benchmarks/bench_gpu.py --corpus corpus.jsonl --vocab vocab.txt -o results/ [--device cuda]

Run with --device cpu to dry-run the script anywhere (that is how it is tested before a GPU session).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import torch_loop, work_dir  # noqa: E402

SHAPES = {
    "minilm-shape": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "bert-base-shape": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def build_source(shape: str, vocab: Path, out: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    tok = transformers.BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, max_position_embeddings=512, **SHAPES[shape])
    transformers.BertModel(cfg).eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


def parity(a: Path, b: Path) -> dict:
    import numpy as np

    from lookalike.engine import open_store

    x, y = open_store(a), open_store(b)
    assert list(x.ids) == list(y.ids), "stores differ in ids/order"
    ex = np.asarray(x.embeddings(), dtype=np.float64)
    ey = np.asarray(y.embeddings(), dtype=np.float64)
    cos = (ex * ey).sum(1) / (np.linalg.norm(ex, axis=1) * np.linalg.norm(ey, axis=1))
    return {"max_abs_diff": float(np.abs(ex - ey).max()), "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()), "rows": len(ex)}


def host_vs_device(model_dir: Path, corpus: Path, work: Path, max_length: int, device: str,
                   budgets=(None,), peak_tflops: float | None = None) -> dict:
    """Is the host ever the limit? The engine end to end from a token cache, against the same model running the
    same batches back to back with every input already on the device (its isolated rate). The issue's target on
    a GPU: end-to-end >= 90% of isolated. Also each batch budget's isolated rate (the batch shape policy) and,
    with --peak-tflops, the fraction of the device's peak."""
    import transformers

    from lookalike.data import CorpusSpec
    from lookalike.engine import OnnxModel, embed
    from lookalike.engine.bench import flops_per_token
    from lookalike.engine.plan import make_plan
    from lookalike.engine.tokens import open_tokens, tokenize_corpus
    from lookalike.engine.windows import WindowEmbedder
    from lookalike.params import EmbedParams

    spec = CorpusSpec(corpus, id_field="id")
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    cache = tokenize_corpus(tok, spec, work / "tokens", max_length=max_length)["out"]
    model = OnnxModel(model_dir, device=device)
    out: dict = {"io_binding": model.io_binding, "budgets": {}}
    for budget in budgets:
        params = EmbedParams(max_length=max_length, batch_tokens=budget)
        plan = make_plan(model.manifest, spec, params, device=model.device, output_names=model.output_names)
        name = str(plan.batch_tokens)
        batches = [b for w in open_tokens(cache).windows(0, params.sort_window, params.shard_rows)
                   for b in WindowEmbedder(model, plan).from_tokens(*w).batches]
        real = sum(b.real_tokens for b in batches)
        for b in batches[:3]:  # warm-up
            model.run_feeds([plan.output], b.device_feeds or model.feeds(b.input_ids, b.attention_mask,
                                                                          b.token_type_ids))
        t = time.perf_counter()
        for b in batches:
            model.run_feeds([plan.output], b.device_feeds or model.feeds(b.input_ids, b.attention_mask,
                                                                          b.token_type_ids))
        isolated = real / (time.perf_counter() - t)
        # a fresh folder per budget and call: a repeated budget must not find a finished store
        e2e_dir = work / f"e2e-{len(out['budgets'])}-{name}"
        stats = embed(model_dir, spec, e2e_dir, params, model=model, tokens=cache, progress=False)
        e2e = stats["real_tokens_per_s"]
        row = {"isolated_real_tokens_per_s": isolated, "end_to_end_real_tokens_per_s": e2e,
               "end_to_end_fraction_of_isolated": e2e / isolated, "padding_overhead": stats["padding_overhead"],
               "batches": len(batches)}
        if peak_tflops:
            avg_len = real / max(stats["rows"], 1)
            row["fraction_of_peak"] = e2e * flops_per_token(model.manifest, int(avg_len)) / (peak_tflops * 1e12)
        out["budgets"][f"{name}" if name not in out["budgets"] else f"{name}#{len(out['budgets'])}"] = row
        print("host_vs_device", name, json.dumps(row), flush=True)
    return out


def same_batch_reference(src: Path, model_dirs: dict[str, Path], corpus: Path, work: Path, max_length: int,
                         device: str, half: bool, budget: int | None = None) -> dict:
    """The device's own numbers on identical batches, all inputs already on the device, back to back:
    the engine's ONNX Runtime session (IO binding), PyTorch eager `BertModel` with SDPA attention (the reference the
    issue sets), and a GEMM-only ceiling (the model's dense matmuls at the same token count, no attention/norms).
    Also the padding of those batches and, on CUDA, the attention kernel ONNX Runtime picked (its debug print)."""
    import torch
    import transformers

    from lookalike.data import CorpusSpec
    from lookalike.engine import OnnxModel
    from lookalike.engine.plan import make_plan
    from lookalike.engine.tokens import open_tokens, tokenize_corpus
    from lookalike.engine.windows import WindowEmbedder
    from lookalike.params import EmbedParams

    spec = CorpusSpec(corpus, id_field="id")
    model_dir = next(iter(model_dirs.values()))
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    cache = tokenize_corpus(tok, spec, work / "tokens", max_length=max_length)["out"]
    model = OnnxModel(model_dir, device=device)
    params = EmbedParams(max_length=max_length, batch_tokens=budget)
    plan = make_plan(model.manifest, spec, params, device=model.device, output_names=model.output_names)
    batches = [b for w in open_tokens(cache).windows(0, params.sort_window, params.shard_rows)
               for b in WindowEmbedder(model, plan).from_tokens(*w).batches]
    real = sum(b.real_tokens for b in batches)
    padded = sum(b.input_ids.size for b in batches)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(run, items):
        for x in items[:3]:
            run(x)
        sync()
        t = time.perf_counter()
        for x in items:
            run(x)
        sync()
        return real / (time.perf_counter() - t)

    out = {"batches": len(batches), "real_tokens": real, "padding_overhead": padded / real - 1,
           "batch_tokens": plan.batch_tokens, "sort_window": params.sort_window}
    out["ort_isolated"] = {}
    for name, d in model_dirs.items():  # every graph variant on the very same batches (same tokenizer)
        m = OnnxModel(d, device=device)
        feeds = [m.upload(m.feeds(b.input_ids, b.attention_mask, b.token_type_ids)) for b in batches]
        out["ort_isolated"][name] = timed(lambda f, m=m: m.run_feeds([plan.output], f), feeds)
        out.setdefault("fused_operators", {})[name] = m.manifest["variant"].get("fused_operators")
        del m
    torch_model = transformers.AutoModel.from_pretrained(src, attn_implementation="sdpa").eval().to(device)
    if half:
        torch_model = torch_model.half()
    feeds = [{k: torch.from_numpy(v).to(device) for k, v in (("input_ids", b.input_ids),
                                                            ("attention_mask", b.attention_mask))} for b in batches]
    with torch.inference_mode():
        out["torch_eager_sdpa"] = timed(lambda f: torch_model(**f).last_hidden_state[:, 0].float().cpu(), feeds)
        cfg = torch_model.config
        h, i_size, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
        n_tok = 65536 if device == "cuda" else 4096  # the GPU's batch size; small on a CPU dry run
        dt = torch.float16 if half else torch.float32
        x = torch.randn(n_tok, h, device=device, dtype=dt)
        ws = [torch.randn(h, o, device=device, dtype=dt) for o in (3 * h, h, i_size)] + \
            [torch.randn(i_size, h, device=device, dtype=dt)]
        y = torch.randn(n_tok, i_size, device=device, dtype=dt)

        def gemms(_):
            for _ in range(layers):
                x @ ws[0], x @ ws[1], x @ ws[2], y @ ws[3]

        reps = max(1, int(real // n_tok))
        sync()
        gemms(0)
        sync()
        t = time.perf_counter()
        for _ in range(reps):
            gemms(0)
        sync()
        out["gemm_ceiling"] = reps * n_tok / (time.perf_counter() - t)
    out["ort_vs_torch_eager_sdpa"] = {n: r / out["torch_eager_sdpa"] for n, r in out["ort_isolated"].items()}
    out["ort_fraction_of_gemm_ceiling"] = {n: r / out["gemm_ceiling"] for n, r in out["ort_isolated"].items()}
    if device == "cuda":  # which attention kernel ONNX Runtime runs (printed by ORT itself, in a child process)
        import subprocess

        probe = ("import numpy as np, onnxruntime as ort; from lookalike.engine import OnnxModel; "
                 f"m = OnnxModel({str(model_dir)!r}, device='cuda'); "
                 "ids = np.ones((4, 64), np.int64); m.run([m.output_names[0]], ids, np.ones_like(ids))")
        env = {**os.environ, "ORT_ENABLE_ATTENTION_KERNEL_DEBUG_INFO": "1"}
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
        out["attention_kernel_debug"] = [line for line in (r.stdout + r.stderr).splitlines()
                                         if "kernel" in line.lower() or "attention" in line.lower()][:12]
    torch_model = None  # free the device memory before the next check
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def from_text(model_dir: Path, corpus: Path, work: Path, max_length: int, device: str, workers: list[int]) -> dict:
    """The engine end to end from text, per number of tokenizing processes (the host pipeline's scaling)."""
    from lookalike.data import CorpusSpec
    from lookalike.engine import embed
    from lookalike.params import EmbedParams

    out = {}
    for n in workers:
        stats = embed(model_dir, CorpusSpec(corpus, id_field="id"), work / f"text-w{n}", EmbedParams(
            max_length=max_length), device=device, progress=False, tokens=False, tokenize_workers=n)
        out[str(n)] = {k: stats[k] for k in ("real_tokens_per_s", "padding_overhead", "seconds", "tokenize_workers")}
        print("from_text", n, json.dumps(out[str(n)]), flush=True)
    return out


def versions(device: str) -> dict:
    import numpy
    import onnxruntime
    import torch
    import transformers

    v = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
         "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
         "transformers": transformers.__version__, "ort_providers": onnxruntime.get_available_providers()}
    if device == "cuda":
        v["gpu"] = torch.cuda.get_device_name(0)
    from _common import machine

    v["cpu"] = {k: machine()[k] for k in ("cpu_model", "isa", "int8_class")}  # the host side depends on it too
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True, type=Path, help="JSONL with id and text")
    ap.add_argument("--vocab", required=True, type=Path, help="a WordPiece vocab.txt")
    ap.add_argument("-o", "--out", required=True, type=Path)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--shapes", default="minilm-shape,bert-base-shape")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--cpu-limit", type=int, default=1000, help="records for the CPU reference run")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--corpus-repeat", type=int, default=1, help="repeat the corpus N times (new ids) to load a GPU")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense fp16 peak (H100 SXM: 989)")
    ap.add_argument("--budgets", default="16384,32768,65536,131072",
                    help="padded tokens per batch to try for the batch-shape policy (cuda)")
    ap.add_argument("--focus", action="store_true",
                    help="only the device-limit checks (issue 24): each fusion route's ORT session vs PyTorch SDPA vs "
                         "the GEMM ceiling on the same batches, from text per tokenizing workers, from the cache. "
                         "Three exports per shape (~30-60 s each for BERT-base): with --corpus-repeat 20 on the "
                         "1,911-record corpus, run one shape per call to stay within a few minutes")
    ap.add_argument("--workers", default=None, help="--focus: tokenize_workers to try from text [0,4,all but 2]")
    args = ap.parse_args()

    from lookalike.analysis.report import write_bench
    from lookalike.data import CorpusSpec
    from lookalike.engine import embed
    from lookalike.engine.bench import run_bench
    from lookalike.exporters import export
    from lookalike.params import EmbedParams

    args.out.mkdir(parents=True, exist_ok=True)
    work = work_dir("lookalike-gpu-")
    base = [json.loads(line) for line in args.corpus.read_text().splitlines() if line.strip()]
    rows = [{"id": f"{k}-{r['id']}", "text": r["text"]} for k in range(args.corpus_repeat) for r in base]
    texts = [r["text"] for r in rows]
    args.corpus = work / "corpus.jsonl"
    args.corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cpu_corpus = work / "cpu-corpus.jsonl"
    cpu_corpus.write_text("".join(json.dumps(r) + "\n" for r in rows[:args.cpu_limit]))
    dev = args.device
    result = {"benchmark": f"gpu-{dev}", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": versions(dev), "corpus_records": len(texts), "max_length": args.max_length, "shapes": {}}
    print(json.dumps(result["machine"]), flush=True)

    def log(name, value):
        print(name, json.dumps(value), flush=True)
        (args.out / f"{result['benchmark']}.json").write_text(json.dumps(result, indent=2) + "\n")

    if args.focus:
        from lookalike.core.session import physical_cores

        workers = [int(x) for x in (args.workers or f"0,4,{max(1, physical_cores() - 2)}").split(",")]
        result["benchmark"] = f"gpu-focus-{dev}"
        for shape in args.shapes.split(","):
            r = result["shapes"][shape] = {}
            src = build_source(shape, args.vocab, work / shape / "src")
            half = dev == "cuda"
            variants = {}  # the fusion routes, each on the same batches: the default first
            for name, kw in (("gpu-set", dict(fusions="gpu")), ("cpu-set", dict(fusions="cpu")),
                             ("plain", dict(optimize=False))):
                variants[name] = work / shape / name
                t = time.perf_counter()
                export(str(src), variants[name], fp16=half, **kw)
                r.setdefault("export_seconds", {})[name] = round(time.perf_counter() - t, 1)
            model_dir = variants["gpu-set" if half else "cpu-set"]  # each precision's default export
            for name, fn in (("same_batches", lambda: same_batch_reference(
                                 src, variants, args.corpus, work / shape / "sb", args.max_length, dev, half)),
                             ("from_text", lambda: from_text(model_dir, args.corpus, work / shape / "ft",
                                                             args.max_length, dev, workers)),
                             ("host_vs_device", lambda: host_vs_device(model_dir, args.corpus, work / shape / "hvd",
                                                                       args.max_length, dev, (None,),
                                                                       args.peak_tflops))):
                try:
                    r[name] = fn()
                except Exception as exc:  # keep going: a failed check is a result too
                    r[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                log(f"{shape} {name}", r[name])
        (args.out / f"gpu-focus-{dev}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out / f'gpu-focus-{dev}.json'}")
        return

    for shape in args.shapes.split(","):
        r = result["shapes"][shape] = {}
        src = build_source(shape, args.vocab, work / shape / "src")
        fp32, fp16 = work / shape / "fp32", work / shape / "fp16"
        t = time.perf_counter()
        m = export(str(src), fp32)
        r["export_fp32"] = {"seconds": time.perf_counter() - t, "parity": m.get("parity"), "exporter": m.get("exporter")}
        m = export(str(src), fp16, fp16=True)
        r["export_fp16"] = {"parity_vs_source": m.get("variant_parity"), "size_MB": m.get("file_size", 0) / 1e6}
        # the plain graphs too: the default fusions were chosen on CPU; this measures them on the device
        plain32, plain16 = work / shape / "fp32-plain", work / shape / "fp16-plain"
        export(str(src), plain32, optimize=False)
        export(str(src), plain16, fp16=True, optimize=False)
        log(f"{shape} export", {k: r[k] for k in ("export_fp32", "export_fp16")})
        runs = r["runs"] = {}
        for name, model_dir, device, corpus in (("engine_fp32_" + dev, fp32, dev, args.corpus),
                                                ("engine_fp16_" + dev, fp16, dev, args.corpus),
                                                ("engine_fp32_plain_" + dev, plain32, dev, args.corpus),
                                                ("engine_fp16_plain_" + dev, plain16, dev, args.corpus),
                                                ("engine_fp32_cpu_ref", fp32, "cpu", cpu_corpus)):
            if name.startswith("engine_fp16") and dev == "cpu":
                continue
            try:
                # warm-up on a few rows (CUDA context, cuBLAS handles), then the timed run
                params = EmbedParams(max_length=args.max_length)
                embed(model_dir, CorpusSpec(corpus, id_field="id", limit=64), work / shape / f"warm-{name}", params,
                      device=device, progress=False)
                stats = embed(model_dir, CorpusSpec(corpus, id_field="id"), work / shape / name, params,
                              device=device, progress=False)
                runs[name] = {k: stats[k] for k in ("seconds", "real_tokens_per_s", "padding_overhead", "rows")}
                runs[name]["tokenizers_parallelism"] = os.environ.get("TOKENIZERS_PARALLELISM", "unset")
            except Exception as exc:  # keep going: a failed variant is a result too
                runs[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            log(f"{shape} {name}", runs[name])
        # the CPU reference embedded the first cpu_limit rows; compare those rows
        try:
            ref_dev = work / shape / "engine_fp32_cpu_ref"
            sub = work / shape / f"{dev}-subset"
            embed(fp32, CorpusSpec(cpu_corpus, id_field="id"), sub, EmbedParams(max_length=args.max_length),
                  device=dev, progress=False)
            r["parity_fp32_vs_cpu"] = parity(sub, ref_dev)
            if dev == "cuda" and "error" not in runs.get(f"engine_fp16_{dev}", {"error": 1}):
                r["parity_fp16_vs_fp32"] = parity(work / shape / f"engine_fp16_{dev}", work / shape / f"engine_fp32_{dev}")
        except Exception as exc:
            r["parity_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        log(f"{shape} parity", {k: v for k, v in r.items() if k.startswith("parity")})
        for peer, kw in (("torch_eager_unsorted_fp32", dict(batch_size=32, sort=False, half=False)),
                         ("torch_sorted_fp16", dict(batch_size=128, sort=True, half=True))):
            if kw["half"] and dev == "cpu":
                continue
            peer_texts = texts if dev == "cuda" else texts[:args.cpu_limit]
            os.environ["TOKENIZERS_PARALLELISM"] = "true"  # the peers tokenize in parallel, as the engine on cuda
            try:
                runs[peer] = torch_loop(src, peer_texts, args.max_length, device=dev, **kw)
            except Exception as exc:
                runs[peer] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            log(f"{shape} {peer}", runs[peer])
        ok = {k: v["real_tokens_per_s"] for k, v in runs.items() if "real_tokens_per_s" in v}
        ratios = r["ratios"] = {}
        for eng in (f"engine_fp32_{dev}", f"engine_fp16_{dev}"):
            for peer in ("torch_eager_unsorted_fp32", "torch_sorted_fp16", "engine_fp32_cpu_ref",
                         eng.replace("_" + dev, "_plain_" + dev)):
                if eng in ok and peer in ok and eng != peer:
                    ratios[f"{eng}_vs_{peer}"] = ok[eng] / ok[peer]
        try:
            bench = run_bench([str(fp32)] + ([str(fp16)] if dev == "cuda" else []), [1, 8, 32, 128], [128],
                              repeat=args.repeat, device=dev)
            write_bench(bench, args.out / f"bench-{shape}")
            r["latency"] = bench.get("models", bench)
        except Exception as exc:
            r["latency_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        log(f"{shape} ratios", ratios)
        try:  # host never the limit? (token cache end to end vs isolated device rate, per batch budget)
            budgets = [int(b) for b in args.budgets.split(",")] if dev == "cuda" else [512, 1024, 2048]
            r["host_vs_device"] = host_vs_device(fp16 if dev == "cuda" else fp32,
                                                 work / ("cpu-corpus.jsonl" if dev == "cpu" else "corpus.jsonl"),
                                                 work / shape / "hvd", args.max_length, dev, budgets,
                                                 args.peak_tflops)
        except Exception as exc:
            r["host_vs_device_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        log(f"{shape} host_vs_device", r.get("host_vs_device") or r.get("host_vs_device_error"))
    print(f"wrote {args.out / f'gpu-{dev}.json'}")


if __name__ == "__main__":
    main()
