"""Export a BERT-family model to a verified ONNX model folder, optionally compressed.

Output folder: `model.onnx`, the tokenizer files, `config.json` and `lookalike.json` (the manifest).
The folder is built under a temporary name and renamed at the end, so a half-written export
never looks complete.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._version import __version__
from ..core.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    MODEL_FILE,
    ExportManifest,
    describe_int8,
    listed_files,
    model_digest,
)
from ..core.heads import TASKS
from ..data.stdlib import stdlib_corpora
from ..errors import ExportError, ModelError
from ..files import fsync_dir, sha256_file, status
from ..notes import NOTICE
from ..outputs import OwnedFolder
from ..params import Task
from . import graph, int8, pooling
from .variant import Variant
from ..core import pretrained

log = logging.getLogger(__name__)

# Varied lengths on purpose: padding, truncation-free short inputs and a long one.
PARITY_TEXTS = [
    "A short one.",
    "The quick brown fox jumps over the lazy dog while the cat watches from the window sill.",
    "Compressed models are assumed to be miniature versions of the large models they replace; "
    "we check this assumption on prediction errors, data representation, data distribution and "
    "vulnerability to adversarial attacks, using nearest neighbours and out-of-distribution detection.",
    "Why?",
]
PARITY_PAIRS = [
    ("Who wrote it?", "The report was written by the committee in 1998 and published a year later."),
    ("What is the capital of France?", "Paris is the capital and most populous city of France."),
    ("How many layers?", "BERT-base has twelve layers; BERT-large has twenty-four."),
    ("When?", "Never."),
]


def _auto_class(task: str):
    import transformers

    return getattr(transformers, TASKS[task].auto_class)


def _load_source(model: str, task: str, revision: str | None):
    """Tokenizer and PyTorch model for `task` from a local folder or a hub id."""
    local = Path(model)
    if local.exists():
        if not (local / "config.json").exists():
            raise ModelError(f"{local}: not a Hugging Face model folder (no config.json)")
        has_tok = any((local / f).exists() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"))
        if not has_tok:
            raise ModelError(f"{local}: model folder has no tokenizer (tokenizer.json or vocab.txt)")
    try:
        tokenizer = pretrained.tokenizer(model, revision=revision)
    except ModelError:
        raise
    except Exception as exc:
        if not local.exists():  # a hub id: the usual cause is no network (the library's text is a wrapped URL)
            log.debug("loading %s from the hub: %s", model, exc)
            raise ModelError(f"{model}: no such local folder, and the Hugging Face hub did not give it (offline, or "
                             "no such model id); give a local model folder or `minilm` (the packaged MiniLM), or "
                             "run where the hub is reachable") from exc
        first = " ".join(str(exc).split())[:200]
        raise ModelError(f"{model}: could not load a tokenizer ({type(exc).__name__}: {first})") from exc
    if not tokenizer.is_fast:
        raise ModelError(f"{model}: no fast tokenizer (the engine needs offsets and batched tokenization)")
    try:
        torch_model = pretrained.load(_auto_class(task), model, revision=revision)
    except ValueError as exc:
        raise ModelError(f"{model}: architecture not supported for task {task!r} ({str(exc)[:200]})") from exc
    except OSError as exc:
        raise ModelError(f"{model}: could not load the model ({str(exc)[:200]})") from exc
    torch_model.eval()
    return tokenizer, torch_model


def _layer_list(model):
    """The nn.ModuleList of encoder layers and the config attribute counting them."""
    base = model.base_model
    for owner in ("encoder", "transformer"):
        sub = getattr(base, owner, None)
        if sub is not None and hasattr(sub, "layer"):
            attr = "n_layers" if hasattr(model.config, "n_layers") else "num_hidden_layers"
            return sub, attr
    raise ModelError(f"layer dropping: cannot find the encoder layers of {type(model).__name__}")


def drop_layers(model, keep: Sequence[int]):
    """Keep only the encoder layers `keep` (0-based, in order) of a Hugging Face BERT-family model."""
    import torch

    owner, attr = _layer_list(model)
    n = len(owner.layer)
    keep = list(keep)
    if not keep:
        raise ModelError("--keep-layers: keep at least one layer")
    bad = [i for i in keep if not 0 <= i < n]
    if bad or len(set(keep)) != len(keep) or keep != sorted(keep):
        raise ModelError(f"--keep-layers {keep}: need distinct increasing indices in 0..{n - 1}")
    owner.layer = torch.nn.ModuleList([owner.layer[i] for i in keep])
    setattr(model.config, attr, len(keep))
    return model


def _torch_outputs(torch_model, tokenizer, task: str) -> tuple[dict, dict[str, np.ndarray]]:
    import torch

    facts = TASKS[task]
    if facts.pairs:
        q, c = zip(*PARITY_PAIRS)
        enc = tokenizer(list(q), list(c), padding=True, return_tensors="pt")
    else:
        enc = tokenizer(PARITY_TEXTS, padding=True, return_tensors="pt")
    accepted = inspect.signature(torch_model.forward).parameters
    enc = {k: v for k, v in enc.items() if k in accepted}
    with torch.no_grad():
        out = torch_model(**enc)
    feeds = {k: v.numpy() for k, v in enc.items()}
    if facts.pooled:
        return feeds, pooling.reference_poolings(out.last_hidden_state.numpy(), feeds["attention_mask"])
    m = feeds["attention_mask"].astype(bool)
    return feeds, {o: np.where(m, getattr(out, o).numpy(), 0) if facts.per_token else getattr(out, o).numpy()
                   for o in facts.outputs}


def _onnx_outputs(path: Path, feeds: dict, task: str) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    feed = {k: v.astype(np.int64) for k, v in feeds.items() if k in names}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    facts = TASKS[task]
    if facts.pooled:
        return {k: v.astype(np.float32) for k, v in outs.items() if k in graph.GRAPH_POOLINGS}
    m = feeds["attention_mask"].astype(bool)
    return {k: np.where(m, outs[k].astype(np.float32), 0) if facts.per_token else outs[k].astype(np.float32)
            for k in facts.outputs}


def _compare(ref: dict, got: dict) -> dict:
    result = {}
    for k in ref:
        diff = float(np.max(np.abs(ref[k] - got[k])))
        result[f"max_abs_diff_{k}"] = diff
        if ref[k].ndim == 2 and k in ("cls", "mean", "logits"):
            a, b = ref[k], got[k]
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            result[f"mean_cosine_{k}"] = float(cos.mean())
    if "logits" in ref:
        result["argmax_agreement"] = float((ref["logits"].argmax(1) == got["logits"].argmax(1)).mean())
    result["max_abs_diff"] = max(v for k, v in result.items() if k.startswith("max_abs_diff_"))
    return result


def _source_revision(model: str, torch_model) -> str:
    local = Path(model)
    if local.exists():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (local / name).exists():
                return "sha256:" + sha256_file(local / name)
        return "local"
    return getattr(torch_model.config, "_commit_hash", None) or "unknown"


def _export_graph(source: str, tmp: Path, task: str, opset: int, torch_model, tokenizer) -> str:
    """optimum's exporter; torch.onnx only for architectures optimum does not register."""
    from optimum.exporters.onnx import main_export

    try:
        main_export(source, tmp, task=task, opset=opset, do_validation=False, library_name="transformers",
                    local_files_only=Path(source).exists())
        return "optimum"
    except (ValueError, KeyError) as exc:
        if "not supported" not in str(exc) and "is not supported" not in str(exc):
            raise
        # optimum knows a fixed list of architectures; a custom BERT-like encoder still traces with torch.onnx.
        log.warning("optimum cannot export %s (%s); falling back to torch.onnx", source, str(exc)[:120])
    import torch

    names = list(tokenizer("a", "b", return_tensors="pt").keys()) if TASKS[task].pairs else \
        list(tokenizer("a", return_tensors="pt").keys())
    enc = tokenizer(["a b c", "d"], padding=True, return_tensors="pt")
    outputs = list(TASKS[task].outputs)
    dyn = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    for o in outputs:
        dyn[o] = {0: "batch_size", 1: "sequence_length"} if o != "logits" else {0: "batch_size"}

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *args):
            out = self.m(**dict(zip(names, args)))
            return tuple(out[o] for o in outputs)

    torch.onnx.export(Wrapped(torch_model), tuple(enc[n] for n in names), str(tmp / MODEL_FILE),
                      input_names=names, output_names=outputs, dynamic_axes=dyn, opset_version=opset, dynamo=False)
    torch_model.config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return "torch.onnx"


def check_export_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse an OUT_DIR that holds anything but an earlier export whose every file lookalike wrote (and then only
    with `overwrite`); an empty folder or a new name is fine."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise ExportError(f"{out_dir}: exists and is not a folder; give a folder for the export")
    if not any(out_dir.iterdir()):
        return
    if not (out_dir / MANIFEST).exists():
        raise ExportError(f"{out_dir}: exists and is not a lookalike export; refusing to write into it")
    if not overwrite:
        raise ExportError(f"{out_dir}: an export already exists there (use --overwrite to replace it)")
    OwnedFolder(out_dir).refuse_foreign("replace the export (--overwrite removes only files lookalike wrote)")


def _count_params(torch_model) -> int:
    return int(sum(p.numel() for p in torch_model.parameters()))


@dataclass
class _Source:
    """The loaded source of an export: the resolved model, its task, the tokenizer and PyTorch model, and the fp32
    outputs its variant's parity is measured against."""

    model: str
    task: str
    task_from: str | None
    revision: str | None
    revision_id: str
    tokenizer: Any
    torch_model: Any
    feeds: dict
    ref: dict


@dataclass
class _Graph:
    """The traced graph in the scratch folder and what was measured on it."""

    folder: Path  # becomes the export folder
    path: Path  # model.onnx
    source: str  # what was traced: the model, or its layer-dropped copy
    exporter: str
    fused: bool = False
    parity: dict | None = None
    scheme: str | None = None
    int8_report: dict | None = None
    variant_parity: dict | None = None


def export(model: str, out_dir: str | Path, task: Task | None = None, variant: Variant | dict | None = None, *,
           opset: int = 18, overwrite: bool = False, atol: float = 1e-4, revision: str | None = None,
           calibration_texts: Sequence[str] | None = None, st_folder: bool = False, **flags) -> dict:
    """Export `model` (hub id or folder) for `task` into `out_dir` as `variant`.

    Args:
        model: a hub id, a local folder, or "minilm" (the packaged all-MiniLM-L6-v2).
        out_dir: the export folder (refused when it holds anything but an earlier export, unless `overwrite`).
        task, variant, calibration_texts, atol: below. opset: the ONNX opset. revision: a hub revision.
        st_folder: also make the folder load in sentence-transformers as is.
        **flags: the variant's fields as keywords (quantize, int8_scheme, per_channel, fp16, keep_layers, ...).

    Returns:
        The export's manifest (`lookalike.json`): task, model hash, variant, parity, int8 choice.

    task: None infers it from the checkpoint's `architectures` (…ForSequenceClassification: text-classification,
    …ForQuestionAnswering: question-answering, else feature-extraction); the manifest says it was inferred.
    variant (lookalike.exporters.variant.Variant, or its fields as keywords: quantize, int8_scheme, per_channel,
    fp16, keep_layers, optimize, fusions): int8 with its scheme ("auto", the default: measure every scheme on this
    CPU and keep the fastest within cosine 0.99 of fp32, lookalike.exporters.int8), fp16 weights, layer dropping,
    the ORT fusions (None: fuse, and fall back to the plain graph, with a warning, if they fail parity).
    calibration_texts: sample texts for the int8 measurement and static scales [a classifier's own fine-tune
    data, else standard-library docstrings]. atol: export parity tolerance (fp32 graph against PyTorch).

    The stages: load the source → trace → fuse and check parity → apply the variant → write the folder.
    """
    if flags:
        if variant is not None:
            raise ExportError("give a variant or its fields as keywords, not both")
        variant = Variant(**flags)
    variant = Variant.coerce(variant)
    out_dir = Path(out_dir)
    src = _resolve_source(model, task, revision)
    check_export_target(out_dir, overwrite)
    t0 = time.perf_counter()
    _load(src, variant)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        g = _trace(src, variant, tmp, opset)
        _fuse_and_check_parity(src, variant, g, atol)
        _apply_variant(src, variant, g, calibration_texts)
        manifest = _write_folder(src, variant, g, out_dir, tmp, opset, st_folder, overwrite, time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s -> %s (%s)", src.model, out_dir, manifest["variant"]["description"])
    return manifest


def _resolve_source(model: str, task: str | None, revision: str | None) -> _Source:
    """The model by its name (`minilm` and the paper's names, as on the command line) and its task, before any
    loading."""
    from ..models import resolve_model

    model = resolve_model(str(model))
    pretrained.refuse_custom_code(model, revision)  # at the door: before any note, any file, any load
    task_from = None
    if task is None:
        task, task_from = pooling.infer_task(model, revision)
        log.log(NOTICE, "task %s (inferred from %s; --task overrides)", task, task_from or "no architectures")
        task_from = task_from or "default"
    if task not in TASKS:
        raise ExportError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    return _Source(model, task, task_from, revision, "", None, None, {}, {})


def _load(src: _Source, variant: Variant) -> None:
    """Load the tokenizer and PyTorch model; the fp32 reference outputs."""
    status(f"export: loading {src.model} (to make: {variant.describe()})")
    src.tokenizer, src.torch_model = _load_source(src.model, src.task, src.revision)
    src.revision_id = _source_revision(src.model, src.torch_model)
    src.feeds, src.ref = _torch_outputs(src.torch_model, src.tokenizer, src.task)


def _trace(src: _Source, variant: Variant, tmp: Path, opset: int) -> _Graph:
    """Drop layers (a copy of the model, saved for tracing), then trace the ONNX graph (+ pooled outputs for an
    embedder) into tmp/onnx."""
    source = src.model
    if variant.keep_layers is not None:
        n_before = len(_layer_list(src.torch_model)[0].layer)
        drop_layers(src.torch_model, variant.keep_layers)
        source = str(tmp / "hf-pruned")
        src.torch_model.save_pretrained(source)
        src.tokenizer.save_pretrained(source)
        log.info("dropped layers: kept %s of %d", list(variant.keep_layers), n_before)
    folder = tmp / "onnx"
    folder.mkdir()
    status("export: tracing the ONNX graph")
    exporter = _export_graph(source, folder, src.task, opset, src.torch_model, src.tokenizer)
    path = folder / MODEL_FILE
    if TASKS[src.task].pooled:
        graph.add_pooling_outputs(path)
    return _Graph(folder, path, source, exporter)


def _fuse_and_check_parity(src: _Source, variant: Variant, g: _Graph, atol: float) -> None:
    """ORT's fusions as the variant asks, and the graph's parity against the (possibly layer-dropped) PyTorch
    model; ExportError past `atol`. A copy of the plain graph is kept for static int8."""
    feeds, ref = _torch_outputs(src.torch_model, src.tokenizer, src.task)
    if variant.int8:  # static int8 quantises the plain graph (the quantiser cannot type fused ops)
        shutil.copyfile(g.path, g.path.with_name("plain.onnx"))
    status("export: fusing and checking parity against PyTorch")
    g.fused, g.parity = _fuse_and_check(g.path, src.torch_model.config, variant.optimize, feeds, ref, src.task,
                                        atol, variant.fusion_set)
    if not g.parity["passed"]:
        raise ExportError(f"parity check failed: ONNX vs PyTorch max abs diff {g.parity['max_abs_diff']:.3g} "
                          f"> {atol:g} (outputs: {', '.join(ref)})")


def _apply_variant(src: _Source, variant: Variant, g: _Graph, calibration_texts) -> None:
    """int8 (the scheme measured or given) or fp16 on the checked graph, and the variant's parity against the
    fp32 source."""
    plain = g.path.with_name("plain.onnx")
    if variant.int8:
        status("export: int8 (every scheme measured against fp32 on this CPU)")
        g.scheme, g.int8_report = _int8(g.path, plain, variant.scheme, src.task, src.tokenizer,
                                        src.torch_model.config, g.fused,
                                        calibration_texts or _finetune_texts(g.source, src.task))
        plain.unlink(missing_ok=True)
    if variant.fp16:
        graph.to_fp16(g.path)
    if variant.compressed:
        try:
            g.variant_parity = _compare(src.ref, _onnx_outputs(g.path, src.feeds, src.task))
        except Exception as exc:  # fp16 graphs may need a GPU provider to run
            g.variant_parity = {"skipped": f"{type(exc).__name__}: {str(exc)[:160]}"}


def _write_folder(src: _Source, variant: Variant, g: _Graph, out_dir: Path, tmp: Path, opset: int,
                  st_folder: bool, overwrite: bool, seconds: float) -> dict:
    """The tokenizer, config, the model's own pooling (and Dense weights), the checksummed manifest; then the
    folder moved into place (an earlier export replaced only when every file of it is lookalike's)."""
    folder, task = g.folder, src.task
    optimized = g.fused and not (variant.int8 and g.scheme == "static-qdq")
    record = variant.record(g.scheme, optimized, graph.fused_operators(g.path) if optimized else None)
    src.tokenizer.save_pretrained(folder)
    src.torch_model.config.save_pretrained(folder)
    manifest = _manifest(src.model, src.revision_id, task, opset, g.path, src.torch_model, record, g.parity,
                         g.variant_parity, g.exporter, seconds)
    if g.int8_report is not None:
        manifest["int8"] = g.int8_report
    if src.task_from is not None:
        manifest["task_inferred_from"] = src.task_from
    if TASKS[task].pooled:
        st = pooling.sentence_transformers_pooling(src.model, src.revision)
        if st is not None:
            pooling.save_dense(src.model, st, folder, src.revision)
            manifest["sentence_transformers"] = st
    if st_folder:
        if not TASKS[task].pooled:
            raise ExportError(f"--st-folder makes a sentence-transformers folder of an embedder; this export is "
                              f"for {task}")
        manifest["st_folder"] = pooling.write_st_folder(src.model, folder, int(src.torch_model.config.hidden_size),
                                                        src.revision)
    manifest["files"] = listed_files(folder)  # everything the runtime reads is checksummed
    manifest = ExportManifest(manifest)
    manifest.write(folder)
    OwnedFolder(folder).record_tree()
    if out_dir.exists():  # an empty folder, or an earlier export every file of which is ours (checked again)
        check_export_target(out_dir, overwrite)
        os.replace(out_dir, tmp / "replaced")  # removed with tmp below
    os.replace(folder, out_dir)
    fsync_dir(out_dir.parent)
    return manifest


CLS_JUDGE_TEXTS = 512  # a classifier's int8 is judged on this many texts: 99% label agreement allows 5 flips
JUDGE_TEXTS = 64


def _graph_outputs(path: Path) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]


def _finetune_texts(source, task: str) -> list[str] | None:
    """A fine-tuned classifier's own training texts (its lookalike-finetune.json names the data), for judging its
    int8 on the task's texts when no --calibration is given; None when unknown or unreadable."""
    from ..data import CorpusSpec
    from ..errors import LookalikeError

    record = Path(str(source)) / "lookalike-finetune.json"
    if not TASKS[task].labelled or not record.is_file():
        return None
    try:
        data = json.loads(record.read_text())["data"]
        texts = CorpusSpec(**{k: v for k, v in data.items() if k != "limit"}).sample_texts(CLS_JUDGE_TEXTS)
    except (LookalikeError, OSError, KeyError, TypeError, ValueError) as exc:
        log.info("int8: the fine-tune's data is not readable here (%s); judging on the sample texts", exc)
        return None
    log.info("int8: judged on %d texts of the fine-tune's own data (%s)", len(texts), data.get("path"))
    return texts


def _int8(path: Path, plain: Path, scheme: str, task: str, tokenizer, config, fused: bool,
          texts: Sequence[str] | None) -> tuple[str, dict]:
    """Quantise `path` in place with `scheme` ("auto": the fastest within cosine 0.99 of fp32 on this CPU). A
    classifier is judged on up to CLS_JUDGE_TEXTS task texts (--calibration, else its fine-tune's data), an
    embedder on every pooled output it has (CLS and mean), other tasks on JUDGE_TEXTS texts."""
    facts = TASKS[task]
    if not texts:
        if facts.labelled:
            log.warning("int8 of a classifier judged on stdlib docstrings, not on its task's texts: give "
                        "--calibration with texts of the task (e.g. its test set)")
        texts = [d["text"] for d in stdlib_corpora(64, 0)[0]]
    texts = list(texts)[:CLS_JUDGE_TEXTS if facts.labelled else JUDGE_TEXTS]
    names = {i.name for i in __import__("onnx").load(str(path), load_external_data=False).graph.input}
    if facts.pairs:  # question + context pairs from the sample texts
        enc_texts = list(texts)
        feeds = []
        for i in range(0, len(enc_texts), 8):
            part = enc_texts[i:i + 8]
            enc = tokenizer([t.split(".")[0] + "?" for t in part], part, padding=True, truncation="only_second",
                            max_length=128, return_tensors="np")
            feeds.append({k: v.astype("int64") for k, v in enc.items() if k in names})
    else:
        feeds = int8.sample_feeds(tokenizer, list(texts), names)
    output = TASKS[task].primary
    report = None
    if scheme == "auto":
        judged = [o for o in ("cls", "mean") if o in _graph_outputs(path)] if facts.pooled else None
        report = int8.choose_scheme(path, output, feeds, fused=fused, config=config, task=task,
                                    plain=plain if plain.exists() else None, judged=judged)
        scheme = report["scheme"]
        log.info("%s", describe_int8(report))
    else:
        report = {"scheme": scheme, "measured": False, "note": "scheme given explicitly; not measured at export"}
    if scheme == "static-qdq" and plain.exists():
        shutil.copyfile(plain, path)
        int8.quantize(path, scheme, fused=False, calibration=feeds)
    else:
        int8.quantize(path, scheme, fused=fused, calibration=feeds)
    return scheme, report


def _fuse_and_check(path: Path, config, optimize: bool | None, feeds, ref, task: str,
                    atol: float, fusions: str = "cpu") -> tuple[bool, dict]:
    """Apply ORT's fusions as asked (None: fuse, or fall back) and check parity; (fused?, parity)."""
    auto = optimize is None
    fuse = True if auto else optimize
    plain = path.with_name("unfused.onnx")
    if fuse and auto:
        shutil.copyfile(path, plain)
    parity = None
    if fuse:
        problem = None
        try:
            graph.optimize_transformer(path, config, fusions)
            parity = _compare(ref, _onnx_outputs(path, feeds, task))
            if parity["max_abs_diff"] > atol:
                problem = f"max abs diff {parity['max_abs_diff']:.3g} > {atol:g}"
        except Exception as exc:  # an architecture the fusion patterns do not expect
            problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        if problem and auto:
            log.warning("ORT fusions skipped: the fused graph failed (%s); exporting the plain graph", problem)
            plain.replace(path)
            fuse, parity = False, None
        elif problem and parity is None:
            raise ExportError(f"ONNX Runtime fusions failed ({problem}); export with --no-optimize")
    plain.unlink(missing_ok=True)
    if parity is None:
        parity = _compare(ref, _onnx_outputs(path, feeds, task))
    parity["atol"] = atol
    parity["passed"] = parity["max_abs_diff"] <= atol
    return fuse, parity


def _manifest(model, revision_id, task, opset, path: Path, torch_model, variant, parity, variant_parity, exporter,
              seconds):
    import onnx
    import onnxruntime
    import optimum
    import torch
    import transformers

    proto = onnx.load(str(path), load_external_data=False)
    cfg = torch_model.config
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "dim", None)
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layers", None)
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_heads", None)
    m = {
        "format_version": FORMAT_VERSION,
        "source": {"model": str(model), "revision": revision_id, "architecture": type(torch_model).__name__,
                   "model_type": cfg.model_type},
        "task": task,
        "opset": opset,
        "exporter": exporter,
        "file": MODEL_FILE,
        "file_size": path.stat().st_size,
        "sha256": model_digest(path),
        "inputs": [i.name for i in proto.graph.input],
        "outputs": [o.name for o in proto.graph.output],
        "hidden_size": hidden,
        "num_layers": layers,
        "num_heads": heads,
        "vocab_size": getattr(cfg, "vocab_size", None),
        "max_position_embeddings": getattr(cfg, "max_position_embeddings", 512),
        "parameters": _count_params(torch_model),
        "variant": variant,
        "parity": parity,
        "variant_parity": variant_parity,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "export_seconds": round(seconds, 2),
        "versions": {"lookalike": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "optimum": getattr(optimum, "__version__", "?"), "onnxruntime": onnxruntime.__version__,
                     "onnx": onnx.__version__},
    }
    if TASKS[task].labelled:
        m["labels"] = {int(k): v for k, v in cfg.id2label.items()}
    return m


def export_summary(manifest: ExportManifest, out_dir: Path) -> dict:
    """What `lookalike export` prints about an export: task, variant, size, parity, the int8 choice, and the
    model's own pooling when it has one."""
    m = ExportManifest(manifest)
    summary = {"out_dir": str(out_dir), "task": m.task, "task_inferred_from": m.get("task_inferred_from"),
               "variant": m.variant_description, "parameters": m.parameters, "file_size": m.file_size,
               "parity_max_abs_diff": m.parity["max_abs_diff"], "variant_parity": m["variant_parity"]}
    if m.int8 is not None:
        summary["int8"] = describe_int8(m.int8) if m.int8.get("measured", True) else m.int8
    if m.sentence_transformers:
        st = m.sentence_transformers
        summary["model_pooling"] = (f"{st['pooling']}{', normalised' if st['normalize'] else ''} "
                                    "(sentence-transformers; `embed --pooling auto` uses it)")
    return summary
