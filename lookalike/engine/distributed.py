"""The Ray backend of `embed`: shards on Ray actors, one ONNX Runtime session per actor, same store as local.

The driver reads the corpus once (the same reader, so the same ids, order and checks), cuts it into the
store's fixed shards, and ships each shard's records to an actor through the object store; the actor
tokenizes and batches exactly as the local engine does (same sort windows), runs its session (a GPU per
actor when asked), and writes its own shard file under a temporary name. The driver records shards in the
manifest in row order. Completed shards are skipped on a re-run; a worker that dies is restarted by Ray
and its task retried (max_restarts / max_task_retries). OUT_DIR must be on storage every node sees.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from ..errors import InputError, LookalikeError
from .store import StoreWriter, write_shard_file

log = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise LookalikeError("the Ray backend needs `pip install 'lookalike[distributed]'`") from None
    return ray


def _worker_device(device: str, gpus_per_worker: float) -> str:
    """The actors' device: cuda when each gets a GPU, else cpu ("auto" never means a GPU it was not given)."""
    worker_device = "cuda" if gpus_per_worker > 0 else ("cpu" if device == "auto" else device)
    if worker_device == "cuda" and gpus_per_worker <= 0:
        raise InputError("--device cuda on Ray needs --gpus-per-worker > 0")
    return worker_device


def _connect(ray, address: str | None, ray_init: dict | None) -> bool:
    """Join (or start) Ray unless already connected; True when this call started it (and must shut it down)."""
    if ray.is_initialized():
        return False
    kwargs = dict(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    kwargs.update(ray_init or {})
    ray.init(address=None if address in (None, "local") else address, **kwargs)
    return True


def _n_workers(ray, workers: int | None, cpus_per_worker: float) -> int:
    return workers or max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_worker, 1e-9)))


def _maybe_die(fault: dict, key: str, index: int) -> None:
    """Fault injection for the tests: the worker process dies once, on task `index`, mid-run."""
    marker = fault.get("marker")
    if fault.get(key) == index and marker and not Path(marker).exists():
        Path(marker).write_text("killed once")
        import os

        os._exit(1)


def _worker_class(ray):
    @ray.remote(max_restarts=3, max_task_retries=3)
    class EmbedWorker:
        def __init__(self, model_dir: str, plan, device: str, threads: int | None, fault: dict | None):
            from .runtime import OnnxModel

            self.model = OnnxModel(model_dir, device=device, threads=threads)
            self.plan = plan
            self.fault = fault or {}

        def run_shard(self, index: int, start: int, records: list, out_dir: str) -> dict:
            import numpy as np

            _maybe_die(self.fault, "kill_shard", index)
            stats: dict = {}
            embs, nts, trs = [], [], []
            for w_start, window in self.plan.windows(records, start):
                win = self.plan.prepare(self.model, w_start, window)
                embs.append(self.plan.infer(self.model, win, stats))
                nts.append(win.n_tokens)
                trs.append(win.truncated)
            entry = write_shard_file(Path(out_dir), index, start, [r.id for r in records], np.concatenate(embs),
                                     np.concatenate(nts), np.concatenate(trs), self.plan.config)
            entry["_stats"] = stats
            return entry

    return EmbedWorker


def embed_ray(model_dir: str | Path, corpus, out_dir: str | Path, *, address: str | None = None,
              workers: int | None = None, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
              threads: int | None = None, device: str = "auto", progress: bool | None = None,
              ray_init: dict | None = None, _fault: dict | None = None, **plan_kwargs) -> dict:
    """Embed on a Ray cluster (`address`: None/"local" starts a local one, "auto" or "ray://host:10001" joins)."""
    ray = _import_ray()
    from ..exporters import load_manifest
    from .pipeline import make_plan, run_stats
    from .runtime import resolve_device

    manifest = load_manifest(model_dir)
    worker_device = _worker_device(device, gpus_per_worker)
    if worker_device == "cpu":
        resolve_device("cpu")
    plan = make_plan(manifest, corpus, device=worker_device, **plan_kwargs)
    writer = StoreWriter(out_dir, plan.config, plan.dim)
    if writer.complete:
        return {"rows": writer.rows_done, "resumed_from": writer.rows_done, "already_complete": True,
                "n_truncated": writer.manifest.get("n_truncated", 0), "backend": "ray"}
    resumed_from = writer.rows_done
    started_here = _connect(ray, address, ray_init)
    try:
        n_workers = _n_workers(ray, workers, cpus_per_worker)
        Worker = _worker_class(ray)
        pool = [Worker.options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker).remote(
            str(Path(model_dir).resolve()), plan, worker_device, threads or max(1, int(cpus_per_worker)), _fault)
            for _ in range(n_workers)]
        t0 = time.perf_counter()
        records = plan.records()
        for _ in range(resumed_from):
            if next(records, None) is None:
                raise InputError(f"corpus has fewer rows than the {resumed_from} already stored", path=corpus)
        in_flight: dict = {}
        finished: dict[int, dict] = {}
        next_index = len(writer.manifest["shards"])
        next_to_record = next_index
        start = resumed_from
        stats = {"real_tokens": 0, "padded_tokens": 0, "n_empty": 0, "batches": 0}
        bar = None
        if progress if progress is not None else sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(initial=resumed_from, unit="rows", desc="embed[ray]", file=sys.stderr)
        exhausted = False

        def submit():
            nonlocal next_index, start, exhausted
            batch = []
            for rec in records:
                batch.append(rec)
                if len(batch) == plan.shard_rows - start % plan.shard_rows:
                    break
            if not batch:
                exhausted = True
                return
            worker = pool[next_index % len(pool)]
            ref = worker.run_shard.remote(next_index, start, batch, str(Path(out_dir).resolve()))
            in_flight[ref] = next_index
            next_index += 1
            start += len(batch)

        while True:
            while not exhausted and len(in_flight) < 2 * len(pool):  # bounded: at most 2 shards per worker queued
                submit()
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                index = in_flight.pop(ref)
                entry = ray.get(ref)
                for k, v in entry.pop("_stats").items():
                    stats[k] = stats.get(k, 0) + v
                finished[index] = entry
                if bar is not None:
                    bar.update(entry["rows"])
            while next_to_record in finished:  # the manifest grows in row order only
                writer.record_shard(finished.pop(next_to_record))
                next_to_record += 1
        if bar is not None:
            bar.close()
        writer.finalize()
        return run_stats(writer, resumed_from, time.perf_counter() - t0, stats, backend="ray", workers=len(pool),
                         device=worker_device, out_dir=str(out_dir))
    finally:
        if started_here:
            ray.shutdown()


# --------------------------------------------------------------------------- predictions

def _predict_worker_class(ray):
    @ray.remote(max_restarts=3, max_task_retries=3)
    class PredictWorker:
        def __init__(self, model_dir: str, task: str, device: str, threads: int | None, options: dict,
                     fault: dict | None):
            from .runtime import OnnxModel

            export_task = {"qa": "question-answering", "cls": "text-classification"}[task]
            self.model = OnnxModel(model_dir, task=export_task, device=device, threads=threads)
            self.task, self.options, self.fault = task, options, fault or {}

        def run_part(self, index: int, records: list) -> dict:
            from .predict import predict_cls, predict_qa

            _maybe_die(self.fault, "kill_part", index)
            if self.task == "qa":
                preds, odds = predict_qa(self.model, records, **self.options)
                return {"predictions": preds, "null_odds": odds}
            return {"predictions": predict_cls(self.model, records, **self.options)}

    return PredictWorker


def predict_ray(model_dir: str | Path, records: list, out: str | Path, *, task: str, options: dict,
                model_sha256: str, address: str | None = None, workers: int | None = None,
                gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, threads: int | None = None,
                device: str = "auto", part_rows: int = 256, progress: bool | None = None,
                ray_init: dict | None = None, _fault: dict | None = None) -> tuple[dict, dict]:
    """Predictions on Ray actors, `part_rows` records per task; parts land in OUT/parts and are reused on resume.

    Returns ({id: prediction}, {id: null odds} (QA) or {}), merged in record order, the same as the local run.
    """
    import hashlib
    import json

    ray = _import_ray()
    from .store import atomic_write_json

    out = Path(out).resolve()
    parts_dir = out / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    ids = hashlib.sha256("\n".join(r.id for r in records).encode()).hexdigest()
    settings = {"model_sha256": model_sha256, "task": task, "options": options, "part_rows": part_rows,
                "n": len(records), "ids_sha256": ids}
    settings_path = parts_dir / "settings.json"
    if settings_path.exists():
        old = json.loads(settings_path.read_text())
        new = json.loads(json.dumps(settings))  # as stored: tuples become lists
        if old != new:
            diff = sorted(k for k in new if old.get(k) != new[k])
            raise InputError(f"{parts_dir} holds parts of another prediction run (differs in {', '.join(diff)}); "
                             "use another OUT or remove it")
    else:
        atomic_write_json(settings_path, settings)
    n_parts = (len(records) + part_rows - 1) // part_rows
    todo = [i for i in range(n_parts) if not (parts_dir / f"part-{i:05d}.json").exists()]
    worker_device = _worker_device(device, gpus_per_worker)
    started_here = _connect(ray, address, ray_init) if todo else False
    try:
        if todo:
            n_workers = min(_n_workers(ray, workers, cpus_per_worker), len(todo))
            Worker = _predict_worker_class(ray)
            pool = [Worker.options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker).remote(
                str(Path(model_dir).resolve()), task, worker_device, threads or max(1, int(cpus_per_worker)),
                options, _fault) for _ in range(n_workers)]
            bar = None
            if progress if progress is not None else sys.stderr.isatty():
                from tqdm import tqdm

                done_rows = len(records) - sum(len(records[i * part_rows:(i + 1) * part_rows]) for i in todo)
                bar = tqdm(total=len(records), initial=done_rows, unit="records",
                           desc=f"predict[ray] {task}", file=sys.stderr)
            in_flight: dict = {}
            queue = list(todo)
            while queue or in_flight:
                while queue and len(in_flight) < 2 * len(pool):  # bounded: at most 2 parts per worker queued
                    i = queue.pop(0)
                    part = records[i * part_rows:(i + 1) * part_rows]
                    in_flight[pool[i % len(pool)].run_part.remote(i, part)] = i
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    i = in_flight.pop(ref)
                    atomic_write_json(parts_dir / f"part-{i:05d}.json", ray.get(ref))
                    if bar is not None:
                        bar.update(min(part_rows, len(records) - i * part_rows))
            if bar is not None:
                bar.close()
    finally:
        if started_here:
            ray.shutdown()
    preds: dict = {}
    odds: dict = {}
    for i in range(n_parts):
        part = json.loads((parts_dir / f"part-{i:05d}.json").read_text())
        preds.update(part["predictions"])
        odds.update(part.get("null_odds", {}))
    if len(preds) != len(records):
        raise LookalikeError(f"{parts_dir}: merged {len(preds)} predictions for {len(records)} records")
    return preds, odds
