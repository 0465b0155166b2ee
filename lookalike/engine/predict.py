"""Predictions with ONNX exports, locally or on Ray: the same task kernels (`tasks`), the same files.

Writes predictions.json ({id: text or ""} in the official SQuAD format, or {id: {label, label_id, probs}}),
null_odds.json for QA (null score - best span score: the official script's no-answer probabilities) and
predict_info.json (model, corpus fingerprint, options, which runner).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..core.manifest import labels as manifest_labels
from ..core.tasks import label_index, prediction_task
from ..data import CorpusSpec
from ..errors import InputError
from ..files import WriterLock
from ..outputs import OwnedFolder
from ..params import PredictParams
from .distributed import predict_ray
from .plan import RayOptions
from .runtime import OnnxModel
from .tasks import predict_cls, predict_qa
from .tokens import cache_config, matching_cache

log = logging.getLogger(__name__)


def predict(model_dir: str | Path, corpus: CorpusSpec | str | Path, out: str | Path, *, task: str,
            params: PredictParams | None = None, device: str = "auto", model: OnnxModel | None = None,
            backend: str = "local", ray: RayOptions | None = None, threads: int | None = None,
            tokens: str | Path | bool | None = None) -> dict:
    """Run the export on `corpus` and write predictions.json (+ null_odds.json for QA) under `out`.

    tokens (classification, local runner): a token cache to read instead of tokenizing; None uses a matching one
    from the shared location when it exists; False never. QA features (strided windows with offset maps) are not
    cached: they depend on the doc stride and are a different product from the cache's rows.
    """
    export_task = prediction_task(task).name
    if backend not in ("local", "ray"):
        raise InputError(f"unknown backend {backend!r} (local or ray)")
    params = params or PredictParams()
    options = params.options(task)
    corpus = CorpusSpec.coerce(corpus)
    if task == "cls":
        corpus = corpus.for_labels()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder; give a folder for the predictions", path=out)
    folder = OwnedFolder(out)
    names = ["predictions.json", "predict_info.json", *(["null_odds.json"] if task == "qa" else [])]
    folder.claim(*names, what="prediction file")  # refused before any work when a name holds a user's file
    if backend == "ray" and model is None:
        model = OnnxModel(model_dir, task=export_task, device="cpu", threads=1)  # driver: checks and labels
    model = model or OnnxModel(model_dir, task=export_task, device=device, threads=threads)
    stream = corpus.records()
    records = list(stream)
    tokens_from = None
    if task == "cls":
        labels = manifest_labels(model.manifest)
        for r in records:
            if r.label is not None:
                label_index(r.label, labels, f"record {r.id}", corpus.path)
    t0 = time.perf_counter()
    with WriterLock(out):
        folder.claim(*names, what="prediction file")
        odds = None
        if backend == "ray":
            preds, odds = predict_ray(model_dir, records, out, task=task, options=options, model_sha256=model.sha256,
                                      device=device, ray=ray or RayOptions(), threads=threads)
        elif task == "qa":
            preds, odds = predict_qa(model, records, **options)
        else:
            cache = None
            if tokens is not False:
                max_length = model.clamp(options["max_length"])
                cache = matching_cache(tokens, cache_config(model.tokenizer, corpus, max_length),
                                       tokenizer=model.tokenizer, corpus=corpus)
            preds = predict_cls(model, records, **options, tokens=cache)
            tokens_from = str(cache.path) if cache is not None else None
        if task == "qa":
            folder.write_json("null_odds.json", odds)
        folder.write_json("predictions.json", preds)
        info = {"kind": "lookalike.predictions", "task": task, "model_dir": str(model_dir),
                "model_sha256": model.sha256, "data": corpus.path, "corpus": corpus.as_dict(),
                "corpus_fingerprint": corpus.fingerprint(), "ids": stream.provenance.get("ids"),
                "tokens_from": tokens_from, "n": len(records),
                "seconds": round(time.perf_counter() - t0, 3),
                "device": model.device if backend == "local" else device, "backend": backend, "options": options}
        folder.write_json("predict_info.json", info)
    return info
