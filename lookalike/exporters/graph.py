"""ONNX graph edits: pooled outputs, ORT transformer fusions, int8 and fp16 variants."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


# the pooled outputs every feature-extraction export has (sentence-transformers' pooling modes, for right padding)
GRAPH_POOLINGS = ("cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken")


def add_pooling_outputs(path: Path) -> None:
    """Add the pooled outputs (B×H each) to a feature-extraction graph: `cls` (first token), `mean` (mask-weighted
    mean), `max`, `mean_sqrt_len`, `weightedmean` (position-weighted) and `lasttoken`, as sentence-transformers
    computes them on right-padded rows (the engine always pads on the right).

    The engine then fetches only B×H floats per batch instead of the whole B×L×H hidden state.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    hidden = next(o for o in g.output if o.name == "last_hidden_state")
    dim = hidden.type.tensor_type.shape.dim[2]
    g.initializer.extend([
        numpy_helper.from_array(np.array(0, dtype=np.int64), "lk_zero"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "lk_axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "lk_axis2"),
        numpy_helper.from_array(np.array(1e-9, dtype=np.float32), "lk_eps"),
        numpy_helper.from_array(np.array(-65504.0, dtype=np.float32), "lk_neg"),  # the float16 minimum too
        numpy_helper.from_array(np.array(1, dtype=np.int64), "lk_axis_scalar1"),
    ])
    g.node.extend([
        helper.make_node("Gather", ["last_hidden_state", "lk_zero"], ["cls"], axis=1, name="lk_cls"),
        helper.make_node("Cast", ["attention_mask"], ["lk_mask_f"], to=TensorProto.FLOAT, name="lk_cast"),
        helper.make_node("Unsqueeze", ["lk_mask_f", "lk_axis2"], ["lk_mask3"], name="lk_unsq"),
        helper.make_node("Mul", ["last_hidden_state", "lk_mask3"], ["lk_masked"], name="lk_mul"),
        helper.make_node("ReduceSum", ["lk_masked", "lk_axis1"], ["lk_sum"], keepdims=0, name="lk_sum"),
        helper.make_node("ReduceSum", ["lk_mask_f", "lk_axis1"], ["lk_count"], keepdims=1, name="lk_cnt"),
        helper.make_node("Max", ["lk_count", "lk_eps"], ["lk_count_safe"], name="lk_max"),
        helper.make_node("Div", ["lk_sum", "lk_count_safe"], ["mean"], name="lk_div"),
        # max over the real tokens (padding masked out, as sentence-transformers sets it to a large negative)
        helper.make_node("Cast", ["lk_mask3"], ["lk_mask3b"], to=TensorProto.BOOL, name="lk_castb"),
        helper.make_node("Where", ["lk_mask3b", "last_hidden_state", "lk_neg"], ["lk_maxin"], name="lk_where"),
        helper.make_node("ReduceMax", ["lk_maxin", "lk_axis1"], ["max"], keepdims=0, name="lk_rmax"),
        # the sum over the square root of the length (sentence-transformers' mean_sqrt_len_tokens)
        helper.make_node("Sqrt", ["lk_count_safe"], ["lk_sqrt"], name="lk_sqrt"),
        helper.make_node("Div", ["lk_sum", "lk_sqrt"], ["mean_sqrt_len"], name="lk_div_sqrt"),
        # position-weighted mean: token i of a right-padded row weighs i (1-based), padding 0
        helper.make_node("CumSum", ["lk_mask_f", "lk_axis_scalar1"], ["lk_pos"], name="lk_cumsum"),
        helper.make_node("Mul", ["lk_pos", "lk_mask_f"], ["lk_w"], name="lk_wmask"),
        helper.make_node("Unsqueeze", ["lk_w", "lk_axis2"], ["lk_w3"], name="lk_unsq_w"),
        helper.make_node("Mul", ["last_hidden_state", "lk_w3"], ["lk_wh"], name="lk_mul_w"),
        helper.make_node("ReduceSum", ["lk_wh", "lk_axis1"], ["lk_wsum"], keepdims=0, name="lk_wsum"),
        helper.make_node("ReduceSum", ["lk_w", "lk_axis1"], ["lk_wtot"], keepdims=1, name="lk_wtot"),
        helper.make_node("Max", ["lk_wtot", "lk_eps"], ["lk_wtot_safe"], name="lk_wmax"),
        helper.make_node("Div", ["lk_wsum", "lk_wtot_safe"], ["weightedmean"], name="lk_wdiv"),
        # the last real token of a right-padded row (its position equals the row's length)
        helper.make_node("Equal", ["lk_pos", "lk_count"], ["lk_is_last"], name="lk_eq"),
        helper.make_node("Cast", ["lk_is_last"], ["lk_last_f"], to=TensorProto.FLOAT, name="lk_cast_last"),
        helper.make_node("Mul", ["lk_last_f", "lk_mask_f"], ["lk_last_w"], name="lk_last_mask"),
        helper.make_node("Unsqueeze", ["lk_last_w", "lk_axis2"], ["lk_last3"], name="lk_unsq_last"),
        helper.make_node("Mul", ["last_hidden_state", "lk_last3"], ["lk_lasth"], name="lk_mul_last"),
        helper.make_node("ReduceSum", ["lk_lasth", "lk_axis1"], ["lasttoken"], keepdims=0, name="lk_sum_last"),
    ])
    for name in GRAPH_POOLINGS:
        out = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch_size", None])
        out.type.tensor_type.shape.dim[1].CopyFrom(dim)
        g.output.append(out)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


FUSION_SETS = ("cpu", "gpu")


def optimize_transformer(path: Path, config, target: str = "cpu") -> None:
    """ONNX Runtime's transformer fusions, in place, for the device the export is meant for.

    cpu (fp32/int8 exports): Attention (one packed QKV GEMM) and BiasGelu, chosen by measurement on CPU
    (benchmarks/README.md): SkipLayerNormalization is left out (ORT's CPU kernel is ~4.6x slower than the
    Add+Add+LayerNormalization it replaces) and so is EmbedLayerNormalization, and Attention takes the raw 2-D
    attention mask, so left padding and masks with holes stay exact.
    gpu (fp16 exports): ORT's BERT set for CUDA: SkipLayerNormalization and BiasSkipLayerNormalization fused too,
    and Attention takes a 1-D mask of right-padded lengths (MaskIndexEnd), which lets ORT's CUDA provider pick its
    fused (memory-efficient / flash) attention kernels instead of the unfused one a 2-D mask falls back to on
    Hopper. Exact for the engine's batches, which always pad on the right. Fused here, in fp32, before the fp16
    conversion (the usual order); parity is checked on the fused fp32 graph.
    """
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    if target not in FUSION_SETS:
        raise ValueError(f"unknown fusion set {target!r} (cpu or gpu)")
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 0)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False  # keeps the graph's inputs (and token type ids) as they are
    if target == "cpu":
        options.enable_skip_layer_norm = False
        options.enable_bias_skip_layer_norm = False
        options.attention_mask_format = AttentionMaskFormat.AttentionMask
    else:
        options.attention_mask_format = AttentionMaskFormat.MaskIndexEnd
    opt = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1,
                         use_gpu=target == "gpu", optimization_options=options,
                         provider="cuda" if target == "gpu" else None)  # graph rewriting: no GPU needed here
    log.info("ORT fusions (%s): %s", target, {k: v for k, v in opt.get_fused_operator_statistics().items() if v})
    opt.save_model_to_file(str(path))


def fused_operators(path: Path) -> dict[str, int]:
    """Counts of ORT's fused operators in a graph (Attention, SkipLayerNormalization, BiasGelu, ...)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def to_fp16(path: Path) -> None:
    """float16 weights and activations, float32 inputs/outputs kept (for GPU execution)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))
    model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(model, str(path))
