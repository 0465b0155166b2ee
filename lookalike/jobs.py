"""Whole jobs over stored artifacts and exports, above the engine, the analysis and the task specs: predict,
score, predict-and-score, self-kNN / query-bank kNN, deep-kNN OOD and the agreement table. `lookalike.cli` only
parses and prints around them; `lookalike.experiment.steps` caches them.

predict writes predictions.json ({id: text or ""} in the official SQuAD format, or {id: {label, label_id,
probs}}), the task's other files (QA: null_odds.json, null score - best span score: the official script's
no-answer probabilities) and predict_info.json (model, corpus fingerprint, options, which runner).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from . import outputs, tasks
from .analysis.knn import KnnResult, is_knn_file, knn_cross, knn_sampled, knn_self, write_faiss_index
from .analysis.ood import OodResult, deep_knn_ood, is_ood_file
from .analysis.report import markdown_table
from .analysis.scoring import ids_digest, load_errors
from .analysis.tables import ModelArtifacts, agree_metrics, agreement_table, table2_display
from .core.manifest import labels as manifest_labels
from .core.manifest import load_manifest
from .core.store import open_store
from .data import CorpusSpec
from .engine.distributed import predict_ray
from .engine.plan import RayOptions
from .engine.runtime import OnnxModel
from .engine.tokens import cache_config, matching_cache
from .errors import InputError
from .files import WriterLock, load_json, progress_bar
from .outputs import OwnedFolder
from .params import Measure, PredictParams

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- predictions and their scores

def predict(model_dir: str | Path, corpus: CorpusSpec | str | Path, out: str | Path, *, task: str | tasks.TaskSpec,
            params: PredictParams | None = None, device: str = "auto", model: OnnxModel | None = None,
            backend: str = "local", ray: RayOptions | None = None, threads: int | None = None,
            tokens: str | Path | bool | None = None) -> dict:
    """Run the export on `corpus` and write the task's prediction files under `out`; return predict_info.

    tokens (tasks that read token caches, local runner): a token cache to read instead of tokenizing; None uses a
    matching one from the shared location when it exists; False never. QA features (strided windows with offset
    maps) are not cached: they depend on the doc stride and are a different product from the cache's rows.
    """
    spec = tasks.get(task)
    if backend not in ("local", "ray"):
        raise InputError(f"unknown backend {backend!r} (local or ray)")
    params = params or PredictParams()
    options = spec.options(params)
    corpus = spec.prepare(CorpusSpec.coerce(corpus))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder; give a folder for the predictions", path=out)
    folder = OwnedFolder(out)
    names = ["predictions.json", "predict_info.json", *spec.files[1:]]
    folder.claim(*names, what="prediction file")  # refused before any work when a name holds a user's file
    if backend == "ray" and model is None:
        model = OnnxModel(model_dir, task=spec.export.name, device="cpu", threads=1)  # driver: checks and labels
    model = model or OnnxModel(model_dir, task=spec.export.name, device=device, threads=threads)
    stream = corpus.records()
    records = list(stream)
    spec.check_records(records, model, corpus)
    tokens_from = None
    t0 = time.perf_counter()
    with WriterLock(out):
        folder.claim(*names, what="prediction file")
        if backend == "ray":
            result = predict_ray(model_dir, records, out, task=spec, options=options, model_sha256=model.sha256,
                                 device=device, ray=ray or RayOptions(), threads=threads)
        else:
            cache = None
            if spec.reads_tokens() and tokens is not False:
                cache = matching_cache(tokens, cache_config(model.tokenizer, corpus, model.clamp(options.max_length)),
                                       tokenizer=model.tokenizer, corpus=corpus)
            result = spec.predict(model, records, options, tokens=cache)
            tokens_from = str(cache.path) if cache is not None else None
        for name, content in result.extra.items():
            folder.write_json(name, content)
        folder.write_json("predictions.json", result.predictions)
        info = {"kind": "lookalike.predictions", "task": spec.name, "model_dir": str(model_dir),
                "model_sha256": model.sha256, "data": corpus.path, "corpus": corpus.as_dict(),
                "corpus_fingerprint": corpus.fingerprint(), "ids": stream.provenance.ids,
                "tokens_from": tokens_from, "n": len(records),
                "seconds": round(time.perf_counter() - t0, 3),
                "device": model.device if backend == "local" else device, "backend": backend,
                "options": options.as_dict()}
        folder.write_json("predict_info.json", info)
    return info


def evaluate(corpus: CorpusSpec | str | Path, predictions: str | Path | dict, *, task: str | tasks.TaskSpec = "qa",
             na_probs=None, na_prob_thresh: float = 1.0, f1_below: float | None = None, labels: dict | None = None,
             out: str | Path | None = None, allow_missing: bool = False) -> dict:
    """Score a predictions file (ours or another tool's) with the task's scorer; with `out`, write metrics.json and
    errors.json.

    Every record of the corpus needs a prediction (InputError naming how many and which are missing), unless
    `allow_missing`: then the subset with predictions is scored and the output says so. errors.json records the
    scored id universe and the corpus fingerprint, so error sets over different questions are never compared.
    """
    spec = tasks.get(task)
    corpus = spec.prepare(CorpusSpec.coerce(corpus))
    where = predictions if not isinstance(predictions, dict) else None
    preds = load_json(predictions, "predictions file") if not isinstance(predictions, dict) else predictions
    if not isinstance(preds, dict):
        raise InputError("predictions must be a JSON object {id: answer}", path=where)
    records = list(corpus.records())
    known = {r.id for r in records}
    missing = [r.id for r in records if r.id not in preds]
    if missing and not allow_missing:
        raise InputError(f"no prediction for {len(missing)} of {len(records)} records (first: {missing[:5]}); "
                         "predict them, or pass --allow-missing to score the rest", path=where)
    if records and len(missing) == len(records):
        raise InputError(f"none of the {len(records)} records of {corpus.path} has a prediction (e.g. "
                         f"{missing[:3]}; the predictions name e.g. {list(preds)[:3]}): nothing to score; were "
                         "they made on another corpus or split?", path=where)
    extra = [q for q in preds if q not in known]
    if extra:
        log.warning("%s: %d predictions name ids that are not in %s (not scored; e.g. %s)", where or "predictions",
                    len(extra), corpus.path, extra[:3])
    spec.check_predictions(preds, where)
    scored = spec.score(records, preds, where=where, known=known, extra=extra, na_probs=na_probs,
                        na_prob_thresh=na_prob_thresh, f1_below=f1_below, labels=labels)
    metrics = scored.metrics
    gold = (metrics.get("class_counts") or {}).get("gold") or {}
    if len(gold) == 1:  # e.g. --limit N on a file sorted by label: errors and accuracy then say little
        log.warning("%s: every scored record has the gold label %s%s; accuracy and error sets over one class say "
                    "little about a classifier", corpus.path, next(iter(gold)),
                    f" (the first {corpus.limit} rows: is the file sorted by label? use --every to spread the "
                    "selection)" if corpus.limit else "")
    ids = sorted(scored.per_id)
    metrics["scored"] = len(ids)
    metrics["complete"] = not missing
    if missing:
        metrics["missing"] = len(missing)
    if out is not None:
        folder = OwnedFolder(out)
        folder.claim("metrics.json", "errors.json", what="evaluation")
        folder.write_json("metrics.json", metrics)
        folder.write_json("errors.json", {
            "kind": "lookalike.errors", "task": spec.name, "criterion": scored.criterion, "n": len(scored.per_id),
            "error_ids": scored.errors, "dataset": corpus.as_dict(), "dataset_fingerprint": corpus.fingerprint(),
            "universe": {"n": len(ids), "sha256": ids_digest(ids), "complete": not missing, "ids": ids},
            "scores": scored.per_id, **({"class_counts": metrics["class_counts"]} if "class_counts" in metrics
                                        else {})})
    return metrics


def predict_and_score(model_dir: str | Path, corpus, out: Path, *, task: str | tasks.TaskSpec,
                      params: PredictParams, device: str = "auto", backend: str = "local",
                      ray=None) -> tuple[dict, dict]:
    """Predictions of an export on `corpus` into `out`, then their official scoring (metrics.json, errors.json):
    (prediction info, metrics). `lookalike predict` and the experiment's predict step."""
    spec = tasks.get(task)
    out = Path(out)
    info = predict(model_dir, corpus, out, task=spec, params=params, device=device, backend=backend, ray=ray)
    metrics = evaluate(corpus, out / "predictions.json", task=spec, out=out, f1_below=params.f1_below,
                       labels=manifest_labels(load_manifest(model_dir)) or None,
                       **spec.side_files(out))
    return info, metrics


# --------------------------------------------------------------------------- neighbours and OOD

def knn(store: str | Path, out: str | Path, k: int, *, index: str = "flat", gpu: bool | None = None,
        block_rows: int = 8192, queries: str | Path | None = None, write_index: str | Path | None = None,
        sample: int | None = None, sample_seed: int = 0, backend: str = "local", ray=None,
        status=lambda s: None) -> tuple[KnnResult, dict]:
    """Self-kNN of a store (or, with `queries`, each query's K nearest bank points; with `sample`, the exact
    neighbours of `sample` points drawn with `sample_seed`) into the neighbour file `out`, and optionally a
    FAISS index of the bank; (the result, what the CLI prints)."""
    if sample is not None and queries is not None:
        raise InputError("--sample draws points of one store for self-kNN; a search of --queries against a bank "
                         "already covers just the queries", field="sample")
    if sample is not None and index != "flat":
        raise InputError("--sample searches exactly (--index flat): the estimate's only error is the draw",
                         field="index")
    on_ray = _ray_search(backend, ray)
    if on_ray is not None and queries is not None:
        raise InputError("--queries searches on the local runner (--backend local)", field="backend")
    outputs.claim(out, legacy=is_knn_file, what="neighbour file")
    if write_index is not None:
        outputs.claim(write_index, what="FAISS index")
    status(f"knn: verifying and loading {store}")
    s = open_store(store)
    if queries is not None:
        if index != "flat":
            raise InputError("--queries searches exactly (--index flat)", field="index")
        q = open_store(queries)
        status(f"knn: {len(q):,} queries against {len(s):,} points, K={k}")
        res = knn_cross(q, s, k, gpu=gpu, block_rows=block_rows)
    elif sample is not None:
        status(f"knn: {sample:,} of {len(s):,} points drawn (seed {sample_seed}), K={k}, the bank streamed")
        bar = progress_bar(None, total=len(s), unit="bank rows", desc="knn --sample")
        res = knn_sampled(s, k, sample, seed=sample_seed, gpu=gpu, block_rows=block_rows, ray=on_ray,
                          progress=bar.update)
        bar.close()
    else:
        status(f"knn: {len(s):,} points, K={k}, {index} index")
        bar = progress_bar(None, total=len(s) if index == "flat" else None, unit="rows", desc="knn")
        res = knn_self(s, k, index=index, gpu=gpu, block_rows=block_rows, progress=bar.update, ray=on_ray)
        bar.close()
    res.save(out)
    extra = {}
    if write_index is not None:
        extra["index_file"] = str(write_faiss_index(s, write_index))
    return res, {"out": str(out), "k": k, "index": index, **res.meta, **extra}


def _ray_search(backend: str, ray) -> dict | None:
    """The Ray options a kNN/OOD search takes (None: the local runner)."""
    if backend not in ("local", "ray"):
        raise InputError(f"unknown backend {backend!r} (local or ray)", field="backend")
    if backend == "local":
        return None
    from .engine.plan import RayOptions

    ray = ray or RayOptions()
    return {"address": ray.address, "workers": ray.workers, "ray_init": ray.ray_init,
            "cpus_per_worker": ray.cpus_per_worker, "gpus_per_worker": ray.gpus_per_worker}


def ood(train: str | Path, test: str | Path, out: str | Path | None, ks, *, val=None, in_test=None,
        tpr: float = 0.95, val_fraction: float = 0.1, seed: int = 0, gpu: bool | None = None,
        allow_overlap: bool = False, backend: str = "local", ray=None) -> OodResult:
    """Deep-kNN OOD of the stores by role (bank `train`, challenge set `test`, optional `val` and `in_test`),
    written to `out` (a JSON file; None: not written)."""
    if out is not None:
        outputs.claim(out, legacy=is_ood_file, what="OOD file")
    bank = open_store(train)
    bar = progress_bar(None, total=len(bank), unit="bank rows", desc="ood")
    res = deep_knn_ood(bank, open_store(test), list(ks), tpr=tpr,
                       val=open_store(val) if val else None, in_test=open_store(in_test) if in_test else None,
                       val_fraction=val_fraction, seed=seed, gpu=gpu, allow_overlap=allow_overlap,
                       ray=_ray_search(backend, ray), progress=bar.update)
    bar.close()
    if out is not None:
        res.save(out)
    return res


# --------------------------------------------------------------------------- agreement

@dataclass(frozen=True)
class Agreement:
    """The agreement table of `agree`: rows (one per model pair, and K when swept), their columns, the Markdown
    tables, and the models whose error ids have no checked universe."""

    rows: list[dict]
    columns: list[str]
    markdown: list[str]
    unchecked: list[str]


def agreement(knns: dict[str, Path], oods: dict[str, Path], errors: dict[str, Path], ks: list[int], *,
              k_ood: int | None = None, reps: int = 1000, dataset=None, measures: tuple[Measure, ...] = ("jaccard",),
              stores: dict[str, Path] | None = None) -> Agreement:
    """Pairwise Jaccard agreement (bootstrap 95% intervals) of models from their stored artifacts, in the order
    the names first appear; the first is the reference.

    Args:
        knns, oods, errors: each model's neighbour file, OOD file and prediction errors, by model name.
        ks: the K of the kNN Jaccard (a sweep gives a column each). k_ood: the OOD file's k compared.
        reps: bootstrap resamples per interval (0: none). dataset: the records the errors were counted over.
        measures: the representation measures to report beside (or instead of) the paper's kNN Jaccard:
            mutual_knn and cknna from the neighbour files, cka and cka_debiased from the embedding stores.
        stores: each model's embedding store, by name (for cka, cka_debiased).

    Returns:
        An Agreement: one row per model pair (every measure, its interval, chance level and verdict), the columns
        and the markdown tables.
    """
    from .analysis.measures import measure

    stores = stores or {}
    for m in measures:
        need = measure(m).needs
        given = stores if need == "store" else knns
        if m != "jaccard" and len(given) < 2:
            what = "embedding stores (--store NAME=STORE)" if need == "store" else "neighbour files (--knn NAME=FILE)"
            raise InputError(f"--measure {m} reads {what} of at least two models (given: {len(given)})",
                             field="measure")
    names = list(dict.fromkeys([*knns, *oods, *errors, *stores]))
    if len(names) < 2:
        raise InputError("give artifacts of at least two models")
    if min(ks) < 1:
        raise InputError("K must be at least 1", field="k")
    arts = {n: ModelArtifacts.load(knn={"before": knns[n]} if n in knns else None, ood=oods.get(n)) for n in names}
    sets = {n: load_errors(p, dataset) for n, p in errors.items()}
    scored = {es.task for es in sets.values() if es.task}
    if len(scored) > 1:
        said = ", ".join(f"{n}: {es.task or 'an id list'}" for n, es in sets.items())
        raise InputError(f"the error sets are of different tasks ({said}); errors are compared within one task",
                         field="errors")
    task = scored.pop() if scored else "qa"  # an external id list: the paper's QA errors
    for n, es in sets.items():
        arts[n].errors[task] = es
    sweep = len(ks) > 1
    rows, tables = [], []
    extra = [measure(m) for m in measures if m != "jaccard"]
    opened = {n: open_store(p) for n, p in stores.items()} if any(m.needs == "store" for m in extra) else {}
    once: dict = {}  # a measure that does not depend on K, by (measure, pair): computed once
    for k in ks:
        k_rows, shown, shown_cols, heads = agreement_table(names, arts, k, k_ood or k, reps)
        for row in k_rows:
            a, b = row["model_i"], row["model_j"]
            for m in extra:
                given = opened if m.needs == "store" else {n: arts[n].knn["before"] for n in knns}
                if a not in given or b not in given:
                    continue
                if m.per_k:
                    row.update(m.cells(given[a], given[b], k, reps, 0))
                else:
                    if (m.name, a, b) not in once:
                        once[(m.name, a, b)] = m.cells(given[a], given[b], k, reps, 0)
                    row.update(once[(m.name, a, b)])
        if extra:
            shown, shown_cols, heads = table2_display(k_rows, agree_metrics())
        rows += [{"k": k, **r} for r in k_rows] if sweep else k_rows
        tables.append((f"K={k}\n\n" if sweep else "") + markdown_table(shown, shown_cols, heads))
    cols = list(dict.fromkeys(c for r in rows for c in r))
    unchecked = [n for n in errors if sets[n].universe is None]
    return Agreement(rows, cols, tables, unchecked)


# --------------------------------------------------------------------------- export-store --with-text

def source_texts(store):
    """An iterator over each row's (text, text_pair) in row order, read again from the store's corpus; InputError
    when the corpus is gone, changed (fingerprint), or gives other ids."""
    cfg = store.config
    if not cfg.get("corpus"):
        raise InputError("--with-text needs the corpus the store was made from, and the store records none",
                         path=store.path, field="config.corpus")
    spec = CorpusSpec(cfg["corpus"], None if cfg.get("format", "auto") == "auto" else cfg["format"],
                      text_field=cfg.get("text_field") or "text", pair_field=cfg.get("pair_field") or None,
                      id_field=cfg.get("id_field") or None, split=cfg.get("split") or None,
                      limit=None if cfg.get("limit", -1) == -1 else cfg["limit"], every=cfg.get("every") or None,
                      offset=cfg.get("offset", 0))
    if not spec.is_local:
        raise InputError("--with-text: the corpus the store was made from is not here", path=spec.path)
    if spec.fingerprint() != cfg.get("corpus_fingerprint"):
        raise InputError("--with-text: the corpus changed since the store was made (its content fingerprint "
                         "differs); its texts would not be the vectors' texts", path=spec.path)
    return _texts_by_row(store, iter(spec.records()))


def _texts_by_row(store, records):
    """(text, text_pair) of each row, the corpus's records matched in order: a row's record is its id (a chunked
    store's: its parent id), and consecutive windows of one record share it."""
    record = None
    from .core.store_formats import _shards

    for f in _shards(store):
        keys = f["parent_id" if store.chunked else "id"].asstr()[:]
        for want in keys:
            if record is None or record.id != want:
                record = next(records, None)
            if record is None or record.id != want:
                raise InputError(f"--with-text: row id {want!r} is not the corpus's next record "
                                 f"({None if record is None else record.id!r}); the corpus is not the one embedded",
                                 path=store.path, field="id")
            yield record.text, record.text_pair
