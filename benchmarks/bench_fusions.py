"""Which ONNX Runtime fusions make the packaged MiniLM fastest on this CPU: the evidence behind the export default.

Graphs: plain (`--no-optimize`), lookalike's fusion set (the default: Attention + BiasGelu, raw mask), ORT's
default BERT fusion set (adds SkipLayerNorm and EmbedLayerNorm), and int8 plain / int8 with lookalike's set.
Each runs in a session with and without ORT's session-level SkipLayerNormFusion (the engine disables it on
CPU). Fixed batches (B x L = 1,024 tokens, the engine's CPU budget) run interleaved, so a noisy neighbour hits
every variant alike; the median of the repeats is the figure. Also the kernel itself: SkipLayerNormalization
vs Add + Add + LayerNormalization at 1,024 x 384. Results: benchmarks/results/fusions-cpu.json.

    python benchmarks/bench_fusions.py [--repeats 25]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from _common import save, work_dir  # noqa: E402

SHAPES = ((4, 256), (8, 128), (16, 64))


def _session(path, threads, no_skip_ln):
    """The engine's CPU session settings, with ORT's SkipLayerNormFusion on (ORT's default) or off (the engine's)."""
    import onnxruntime as ort

    from lookalike.core.session import session_setup

    opts, providers, disabled = session_setup("cpu", threads)
    return ort.InferenceSession(str(path), opts, providers=providers,
                                disabled_optimizers=disabled if no_skip_ln else [])


def kernel_skip_layer_norm(threads, repeats=200, rows=1024, hidden=384):
    """SkipLayerNormalization vs Add + Add + LayerNormalization, one op graph each, optimisations off."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    consts = [numpy_helper.from_array(rng.random(hidden, dtype=np.float32), n) for n in ("g", "b", "bias")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [rows, hidden]) for n in ("x", "s", "y")]
    graphs = {
        "SkipLayerNormalization": [helper.make_node("SkipLayerNormalization", ["x", "s", "g", "b", "bias"], ["y"],
                                                    domain="com.microsoft", epsilon=1e-12)],
        "Add+Add+LayerNormalization": [helper.make_node("Add", ["x", "bias"], ["t"]),
                                       helper.make_node("Add", ["t", "s"], ["u"]),
                                       helper.make_node("LayerNormalization", ["u", "g", "b"], ["y"], axis=-1,
                                                        epsilon=1e-12)]}
    feeds = {"x": rng.random((rows, hidden), dtype=np.float32), "s": rng.random((rows, hidden), dtype=np.float32)}
    out, ys = {}, []
    for name, nodes in graphs.items():
        model = helper.make_model(helper.make_graph(nodes, name, io[:2], io[2:], consts),
                                  opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 9
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        s = ort.InferenceSession(model.SerializeToString(), o, providers=["CPUExecutionProvider"])
        ys.append(s.run(None, feeds)[0])
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            s.run(None, feeds)
            ts.append(time.perf_counter() - t)
        out[name] = {"median_ms": float(np.median(ts)) * 1e3, "min_ms": float(min(ts)) * 1e3}
    out["max_abs_diff"] = float(np.abs(ys[0] - ys[1]).max())
    out["skip_ln_slowdown"] = out["SkipLayerNormalization"]["median_ms"] / out["Add+Add+LayerNormalization"]["median_ms"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import transformers
    from onnxruntime.transformers.optimizer import optimize_model

    from lookalike.exporters import export
    from lookalike.models import minilm_path

    work = work_dir("lookalike-fusions-")
    src = str(minilm_path())
    export(src, work / "plain", optimize=False)
    export(src, work / "lookalike")  # the default
    export(src, work / "int8", quantize="int8", per_channel=True, optimize=False)
    export(src, work / "int8-fused", quantize="int8", per_channel=True)  # the default
    cfg = transformers.AutoConfig.from_pretrained(work / "plain")
    ort_default = optimize_model(str(work / "plain" / "model.onnx"), model_type="bert", hidden_size=cfg.hidden_size,
                                 num_heads=cfg.num_attention_heads, opt_level=1, use_gpu=False)
    ort_default.save_model_to_file(str(work / "ort-default.onnx"))
    graphs = {"fp32 plain": work / "plain" / "model.onnx", "fp32 lookalike fusions": work / "lookalike" / "model.onnx",
              "fp32 ORT default fusions": work / "ort-default.onnx", "int8 plain": work / "int8" / "model.onnx",
              "int8 lookalike fusions": work / "int8-fused" / "model.onnx"}
    sessions = {(g, flag): _session(p, args.threads, flag) for g, p in graphs.items() for flag in (False, True)}

    rng = np.random.default_rng(0)
    table = {}
    for B, L in SHAPES:
        feeds = {"input_ids": rng.integers(1000, 20000, (B, L)), "attention_mask": np.ones((B, L), np.int64),
                 "token_type_ids": np.zeros((B, L), np.int64)}
        times = {k: [] for k in sessions}
        for s in sessions.values():
            s.run(["cls"], feeds)
        for _ in range(args.repeats):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(["cls"], feeds)
                times[k].append(time.perf_counter() - t)
        row = {}
        for (g, flag), ts in times.items():
            row[f"{g}{' | SkipLayerNormFusion off' if flag else ''}"] = float(np.median(ts)) * 1e3
        table[f"{B}x{L}"] = row
        print(B, L, {k: round(v, 1) for k, v in row.items()}, flush=True)

    def speedup(a, b):  # mean over shapes of time(a) / time(b)
        return float(np.mean([table[s][a] / table[s][b] for s in table]))

    engine_fp32 = "fp32 lookalike fusions | SkipLayerNormFusion off"
    engine_int8 = "int8 lookalike fusions | SkipLayerNormFusion off"
    ratios = {  # > 1: the engine's setting is faster
        "engine_fp32_vs_plain_graph_ort_defaults": speedup("fp32 plain", engine_fp32),
        "engine_fp32_vs_ort_default_fusions": speedup("fp32 ORT default fusions", engine_fp32),
        "engine_int8_vs_plain_int8_ort_defaults": speedup("int8 plain", engine_int8),
        "engine_int8_vs_plain_int8_skip_ln_fusion_off": speedup("int8 plain | SkipLayerNormFusion off", engine_int8),
    }
    kernel = kernel_skip_layer_norm(args.threads)
    print(ratios, kernel)
    save("fusions-cpu", {"model": "all-MiniLM-L6-v2 (packaged)", "threads": args.threads, "repeats": args.repeats,
                         "statistic": "median ms per batch, variants interleaved", "median_ms": table,
                         "ratios": ratios, "kernel_1024x384": kernel})


if __name__ == "__main__":
    main()
