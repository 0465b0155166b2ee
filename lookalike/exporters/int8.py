"""int8 by instruction set: build each int8 scheme, measure it against fp32 on this CPU, keep the fastest that
stays close to fp32.

Whether int8 is faster depends on the CPU: MLAS's int8 GEMMs use VNNI (AVX-512 VNNI, AVX-VNNI) or AMX where
they exist, and plain AVX2/AVX-512 multiply-adds where they do not (measured per CPU: benchmarks/results/int8-*.json).
So `--int8-scheme auto` builds the candidates, times each against the fp32 graph on the same batches in interleaved rounds (best
round each), checks each one's output against fp32 (mean cosine of the pooled / logit rows >= 0.99), and
keeps the fastest that passes. The manifest records the scheme, the CPU and ISA, every candidate's speed-up and
cosine, and whether int8 is faster here at all. A choice is cached per (CPU model + ISA, model shape, ONNX
Runtime version) in $LOOKALIKE_CACHE, so a family of same-shaped exports measures once.

Schemes:
  dynamic               weights int8 per tensor, activations quantised at run time (MatMulInteger)
  dynamic-per-channel   weights int8 per output channel (more accurate)
  dynamic-reduce-range  7-bit weights per channel: avoids the u8 x s8 saturation of non-VNNI AVX2/AVX-512
  static-qdq            weights per channel and activations with scales calibrated on sample texts (QDQ)
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from .. import outputs
from ..core.cpu import cpu_info
from ..core.session import session_setup
from ..core.heads import TASKS
from ..errors import ExportError, InputError
from ..files import cache_dir, json_safe, load_json, progress_bar, status

log = logging.getLogger(__name__)

SCHEMES = ("dynamic", "dynamic-per-channel", "dynamic-reduce-range", "static-qdq")
MIN_COSINE = 0.99
MIN_AGREEMENT = 0.99  # classifiers: the share of sample texts whose int8 label is fp32's


def quantize(path: Path, scheme: str, *, fused: bool, calibration: list[dict] | None = None) -> None:
    """Quantise the graph at `path` in place with `scheme`."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if scheme not in SCHEMES:
        raise ExportError(f"unknown int8 scheme {scheme!r} (known: {', '.join(SCHEMES)}, auto)")
    tmp = path.with_suffix(".int8.onnx")
    # fused contrib ops lose type info; without a default the quantiser cannot type their outputs
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT} if fused else {}
    if scheme.startswith("dynamic"):
        quantize_dynamic(str(path), str(tmp), per_channel=scheme != "dynamic",
                         reduce_range=scheme == "dynamic-reduce-range", weight_type=QuantType.QInt8,
                         extra_options=extra)
    else:
        if not calibration:
            raise ExportError("static int8 needs calibration inputs")
        quantize_static(str(path), str(tmp), _Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm"], extra_options={**extra, "ActivationSymmetric": False})
    tmp.replace(path)


class _Reader:
    """ONNX Runtime's calibration reader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict]):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):  # pragma: no cover - not used by the MinMax calibrator
        pass


def sample_feeds(tokenizer, texts: list[str], input_names, batch: int = 8, max_length: int = 128) -> list[dict]:
    """Padded int64 feeds of `texts` in batches (the same for every candidate)."""
    feeds = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=max_length, return_tensors="np")
        f = {k: v.astype(np.int64) for k, v in enc.items() if k in input_names}
        if "token_type_ids" in input_names and "token_type_ids" not in f:
            f["token_type_ids"] = np.zeros_like(f["input_ids"])
        feeds.append(f)
    return feeds


def _session(path: Path):
    import onnxruntime as ort

    opts, providers, disabled = session_setup("cpu")
    return ort.InferenceSession(str(path), opts, providers=providers, disabled_optimizers=disabled)


def _rows(sess, feeds, output: str) -> np.ndarray:
    out = []
    for f in feeds:
        (y,) = sess.run([output], f)
        out.append(y.reshape(len(y), -1).astype(np.float64) if y.ndim == 2 else
                   (y * f["attention_mask"][..., None] if y.ndim == 3 else y).reshape(len(y), -1))
    return np.concatenate(out)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)).mean())


def measure(candidates: dict[str, Path], feeds: list[dict], output: str, rounds: int = 3,
            progress=None) -> dict[str, float]:
    """Tokens/s of each graph over the same batches, in interleaved rounds; the best round of each.
    `progress(1)` after each graph's round."""
    sessions = {name: _session(p) for name, p in candidates.items()}
    tokens = sum(int(f["attention_mask"].sum()) for f in feeds)
    best = {name: float("inf") for name in sessions}
    for name, s in sessions.items():  # warm-up
        s.run([output], feeds[0])
    for _ in range(rounds):
        for name, s in sessions.items():
            t = time.perf_counter()
            for f in feeds:
                s.run([output], f)
            best[name] = min(best[name], time.perf_counter() - t)
            if progress is not None:
                progress(1)
    return {name: tokens / sec for name, sec in best.items()}


def _choice_key(path: Path, config, task: str) -> str:
    import onnxruntime as ort

    cpu = cpu_info()
    shape = [getattr(config, k, None) for k in ("model_type", "hidden_size", "num_hidden_layers", "n_layers",
                                                 "num_attention_heads", "intermediate_size")]
    return hashlib.sha256(json.dumps([cpu["model"], cpu["isa"], shape, task, ort.__version__,
                                      path.stat().st_size // (1 << 20)]).encode()).hexdigest()[:16]


def choose_scheme(fp32: Path, output: str, feeds: list[dict], *, fused: bool, config, task: str = "",
                  plain: Path | None = None, schemes=SCHEMES, use_cache: bool = True,
                  judged: list[str] | None = None) -> dict:
    """Build and measure every scheme against `fp32` on this CPU; the report names the one to use.

    judged: the outputs whose cosine must hold (an embedder: every pooling it offers, so the scheme is right for
    the pooling a store will use); `output` alone by default. A classifier is judged on label agreement over the
    feeds' texts: n texts allow floor(n × (1 − MIN_AGREEMENT)) flips, said in the report and the refusal.

    {"scheme", "speedup", "cosine", "faster_than_fp32", "cpu", "candidates": [{scheme, speedup, cosine, ok}]}
    """
    judged = judged or [output]
    labelled = task in TASKS and TASKS[task].labelled
    n_texts = sum(len(f["input_ids"]) for f in feeds)
    flips_allowed = int(n_texts * (1 - MIN_AGREEMENT) + 1e-9)
    key_task = task if judged == [output] else f"{task}:{','.join(judged)}"
    cache = cache_dir("int8-choices") / f"{_choice_key(fp32, config, key_task)}-{n_texts}.json"
    if use_cache and (cache.exists() or cache.is_symlink()):
        report, problem = cached_choice(cache, schemes)
        if report is not None:
            report["from_cache"] = str(cache)
            return report
        if outputs.OwnedFolder(cache.parent).status(cache.name) != "ours":
            raise ExportError(f"{cache}: a cached int8 choice that does not verify ({problem}), changed since "
                              "lookalike wrote it or not written by it; lookalike neither believes nor replaces it: "
                              "move it away and re-run")
        log.warning("%s: %s; measuring the int8 schemes again", cache, problem)
    work = fp32.parent / ".int8-candidates"
    work.mkdir(exist_ok=True)
    # the longest step of an int8 export: a bar with an ETA over building, timing (3 rounds) and judging each
    status(f"int8: building and measuring {len(schemes)} schemes against fp32 on {n_texts} texts")
    bar = progress_bar(None, total=len(schemes) + 3 * (len(schemes) + 1) + len(schemes), unit="step",
                       desc="int8 schemes")
    try:
        paths, build_s = {"fp32": fp32}, {}
        for scheme in schemes:
            p = work / f"{scheme}.onnx"
            static_plain = scheme == "static-qdq" and plain is not None
            shutil.copyfile(plain if static_plain else fp32, p)
            t = time.perf_counter()
            try:
                quantize(p, scheme, fused=fused and not static_plain, calibration=feeds)
            except Exception as exc:  # a scheme this graph cannot take is a result, not a failure
                log.info("int8 scheme %s failed: %s", scheme, exc)
                bar.update(1 + 3)  # neither timed
                continue
            finally:
                bar.update(1)
            paths[scheme], build_s[scheme] = p, round(time.perf_counter() - t, 2)
        speed = measure(paths, feeds, output, progress=bar.update)
        fp32_session = _session(fp32)
        refs = {o: _rows(fp32_session, feeds, o) for o in judged}
        ref = refs[judged[0]]
        rows = []
        for scheme in schemes:
            if scheme not in paths:
                rows.append({"scheme": scheme, "ok": False, "error": "quantisation failed"})
                continue
            sess = _session(paths[scheme])
            cosines = {o: round(_cosine(refs[o], _rows(sess, feeds, o)), 6) for o in judged}
            bar.update(1)
            got = _rows(sess, feeds, judged[0])
            row = {"scheme": scheme, "tokens_per_s": round(speed[scheme], 1),
                   "speedup": round(speed[scheme] / speed["fp32"], 3), "cosine": min(cosines.values()),
                   "build_seconds": build_s[scheme]}
            if len(judged) > 1:
                row["cosine_by_output"] = cosines
            if labelled:
                # logits of a few classes can point elsewhere while the decision holds: judge the decision
                flips = int((ref.argmax(1) != got.argmax(1)).sum())
                row["argmax_agreement"] = round(1 - flips / max(n_texts, 1), 4)
                row["label_flips"] = flips
                row["ok"] = flips <= flips_allowed
            else:
                row["ok"] = row["cosine"] >= MIN_COSINE
            rows.append(row)
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    passing = [r for r in rows if r["ok"]]
    if not passing:
        rule = (f"agrees with fp32's label on >= {MIN_AGREEMENT:.0%} of the {n_texts} sample texts (at most "
                f"{flips_allowed} flips)" if labelled else
                f"keeps cosine >= {MIN_COSINE} against fp32 on {' and '.join(judged)} over {n_texts} texts")
        raise ExportError(f"no int8 scheme {rule} here: " + "; ".join(_candidate(r) for r in rows)
                          + ". Force one with --int8-scheme SCHEME (recorded as not measured), or give "
                          "--calibration texts from the model's own task")
    best = max(passing, key=lambda r: r["speedup"])
    cpu = cpu_info()
    report = {"scheme": best["scheme"], "speedup": best["speedup"], "cosine": best["cosine"],
              "faster_than_fp32": best["speedup"] > 1.05, "fp32_tokens_per_s": round(speed["fp32"], 1),
              "cpu": cpu["model"], "isa": cpu["isa"], "int8_class": cpu["int8_class"], "candidates": rows,
              "measured": "tokens/s on the export's sample batches, best of 3 interleaved rounds, fp32 alongside",
              "min_cosine": MIN_COSINE, "n_texts": n_texts, "judged_on": judged}
    if labelled:
        report["flips_allowed"] = flips_allowed
    outputs.write_json(cache, {"kind": CHOICE_KIND, "report": report, "sha256": _digest(report)})
    return report


CHOICE_KIND = "lookalike.int8-choice"


def _digest(report: dict) -> str:
    return hashlib.sha256(json.dumps(json_safe(report), sort_keys=True).encode()).hexdigest()


def cached_choice(path: Path, schemes=SCHEMES) -> tuple[dict | None, str | None]:
    """(the measured choice stored at `path`, None) when it verifies: lookalike's kind, a report whose checksum
    matches and whose scheme is one of the candidates it lists as passing; else (None, why not)."""
    try:
        data = load_json(path, "int8 choice")
    except InputError as exc:
        return None, str(exc)
    report = data.get("report") if isinstance(data, dict) and data.get("kind") == CHOICE_KIND else None
    if not isinstance(report, dict):
        return None, "not a lookalike int8 choice (of this version)"
    if data.get("sha256") != _digest(report):
        return None, "its content does not match the checksum it was written with"
    passing = {c.get("scheme") for c in report.get("candidates", []) if isinstance(c, dict) and c.get("ok")}
    if report.get("scheme") not in set(schemes) & passing or not isinstance(report.get("speedup"), (int, float)):
        return None, "its chosen scheme is not one it measured as passing"
    return report, None


def _candidate(r: dict) -> str:
    if "error" in r:
        return f"{r['scheme']} ({r['error']})"
    agree = f", label agreement {r['argmax_agreement']:.1%} ({r.get('label_flips', '?')} flips)" \
        if "argmax_agreement" in r else ""
    return f"{r['scheme']} (cosine {r['cosine']:.4f}{agree}, {r['speedup']:.2f}x)"

