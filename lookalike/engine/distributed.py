"""The Ray runner of `embed` and `predict`: the same plan and task kernels as the local runner, on Ray actors.

Embedding: the driver reads the corpus once (the same reader, so the same ids, order and checks), cuts it into
the store's fixed shards, and ships each shard's records to an actor through the object store; the actor
tokenizes and batches exactly as the local engine does (same sort windows), runs its session (a GPU per actor
when asked), and writes its own shard file under a temporary name. The driver holds the store's writer lock,
checks each shard against its entry and records shards in the manifest in row order. Completed shards are
skipped on a re-run; a worker that dies is restarted by Ray and its task retried (max_restarts /
max_task_retries). OUT_DIR must be on storage every node sees.

Predictions: parts of `part_rows` records go to actors running the same `tasks` kernels; each part lands in
OUT/parts as it finishes (a re-run reuses them; parts of other settings are refused).

This module imports only the shared floor (plan, windows, tasks, runtime, core); pipeline and predict import it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Iterator

from ..core.cluster import _connect, _import_ray
from ..core.manifest import load_manifest
from ..core.session import resolve_device
from ..core.store import StoreWriter, write_shard_file
from ..core.heads import Predictions
from ..data import CorpusSpec
from ..errors import InputError, LookalikeError
from ..files import atomic_write_json, in_own_folder, load_json, progress_bar, settings_guard
from ..outputs import OutputError, OwnedFolder
from ..params import EmbedParams
from .plan import RayOptions, check_unchanged, make_plan, run_stats, shard_aligned, skip_done
from .runtime import OnnxModel
from .windows import Counts, WindowEmbedder, fix_ranges

log = logging.getLogger(__name__)


def _worker_device(device: str, gpus_per_worker: float) -> str:
    """The actors' device: cuda when each gets a GPU, else cpu ("auto" never means a GPU it was not given)."""
    worker_device = "cuda" if gpus_per_worker > 0 else ("cpu" if device == "auto" else device)
    if worker_device == "cuda" and gpus_per_worker <= 0:
        raise InputError("--device cuda on Ray needs --gpus-per-worker > 0")
    return worker_device


def _pool(ray_mod, cls, opts: RayOptions, n: int, *args):
    return [cls.options(num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker).remote(*args)
            for _ in range(n)]


def _n_workers(ray, workers: int | None, cpus_per_worker: float) -> int:
    return workers or max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_worker, 1e-9)))


def ordered_on_actors(ray, pool: list, method: str, tasks: Iterator[tuple[int, tuple]],
                      per_worker: int = 2) -> Iterator[tuple[int, object]]:
    """(index, result) of `actor.method(*args)` for every (index, args) of `tasks`, in task order, actors taken
    round-robin. Bounded: at most `per_worker` tasks per actor are queued or finished-but-not-yet-yielded, so a slow
    task holds back submission rather than letting results pile up. A failed task raises here."""
    limit = per_worker * len(pool)
    in_flight: dict = {}  # ref -> position
    finished: dict[int, tuple[int, object]] = {}  # position -> (index, result), waiting for earlier ones
    positions = enumerate(tasks)
    next_out = 0
    exhausted = False
    while True:
        while not exhausted and len(in_flight) + len(finished) < limit:
            item = next(positions, None)
            if item is None:
                exhausted = True
                break
            pos, (index, args) = item
            in_flight[getattr(pool[pos % len(pool)], method).remote(*args)] = (pos, index)
        if not in_flight and not finished:
            return
        if in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                pos, index = in_flight.pop(ref)
                finished[pos] = (index, ray.get(ref))
        while next_out in finished:
            yield finished.pop(next_out)
            next_out += 1


def _embed_worker_class(ray):
    @ray.remote(max_restarts=3, max_task_retries=3)
    class EmbedWorker:
        def __init__(self, model_dir: str, plan, device: str, threads: int | None):
            self.runner = WindowEmbedder(OnnxModel(model_dir, device=device, threads=threads), plan)

        def run_shard(self, index: int, start: int, records: list, out_dir: str) -> dict:
            emb, n_tokens, truncated, counts = self.runner.embed_records(start, records)
            entry = write_shard_file(Path(out_dir), index, start, [r.id for r in records], emb, n_tokens, truncated,
                                     self.runner.plan.config)
            entry["_counts"] = counts
            return entry

    return EmbedWorker


def embed_ray(model_dir: str | Path, corpus: CorpusSpec, out_dir: str | Path, params: EmbedParams, *,
              ray: RayOptions, threads: int | None = None, device: str = "auto",
              progress: bool | None = None) -> dict:
    """Embed on a Ray cluster: the driver cuts shards and records them in order; actors embed and write them."""
    ray_mod = _import_ray()
    manifest = load_manifest(model_dir)
    worker_device = _worker_device(device, ray.gpus_per_worker)
    if worker_device == "cpu":
        resolve_device("cpu")
    plan = make_plan(manifest, corpus, params, device=worker_device)
    if params.chunk_tokens is not None:
        raise InputError("--chunk-tokens runs on the local backend (--backend local); Ray shards cut records, not "
                         "chunks", field="chunk_tokens")
    if plan.needs_ranges:  # fixed once on the driver, so every actor quantises alike
        plan = fix_ranges(plan, OnnxModel(model_dir, device="cpu", threads=threads), corpus, out_dir)
    with StoreWriter(out_dir, plan.config, plan.stored_dim, params.shard_rows) as writer:
        if writer.complete:
            return {"rows": writer.rows_done, "resumed_from": writer.rows_done, "already_complete": True,
                    "n_truncated": writer.manifest.get("n_truncated", 0), "backend": "ray"}
        resumed_from = writer.rows_done
        plan.say_notes()
        started_here = _connect(ray_mod, ray.address, ray.ray_init)
        try:
            pool = _pool(ray_mod, _embed_worker_class(ray_mod), ray,
                         _n_workers(ray_mod, ray.workers, ray.cpus_per_worker), str(Path(model_dir).resolve()),
                         plan, worker_device, threads or max(1, int(ray.cpus_per_worker)))
            t0 = time.perf_counter()
            shards = shard_aligned(skip_done(corpus.records(), resumed_from, corpus.path), resumed_from,
                                   params.shard_rows, params.shard_rows)
            target = str(Path(out_dir).resolve())
            tasks = ((index, (index, start, batch, target))
                     for index, (start, batch) in enumerate(shards, start=writer.shards_done))
            done = Counts()
            bar = progress_bar(progress, initial=resumed_from, desc="embed[ray]")
            for _, entry in ordered_on_actors(ray_mod, pool, "run_shard", tasks):  # the manifest grows in row order
                done += entry.pop("_counts")
                writer.record_shard(entry)
                bar.update(entry["rows"])
            bar.close()
            check_unchanged(corpus, plan.config["corpus_fingerprint"])
            written = writer.finalize()
            return run_stats(written["rows"], resumed_from, written["n_truncated"], written["shards"],
                             time.perf_counter() - t0, done, backend="ray", workers=len(pool),
                             device=worker_device, out_dir=str(out_dir))
        finally:
            if started_here:
                ray_mod.shutdown()


def _predict_worker_class(ray):
    @ray.remote(max_restarts=3, max_task_retries=3)
    class PredictWorker:
        def __init__(self, model_dir: str, task, device: str, threads: int | None, options):
            self.model = OnnxModel(model_dir, task=task.export.name, device=device, threads=threads)
            self.task, self.options = task, options

        def run_part(self, index: int, records: list) -> dict:
            result = self.task.predict(self.model, records, self.options)
            # a part holds the predictions and each of the task's other files by stem ("null_odds")
            return {"predictions": result.predictions, **{Path(n).stem: v for n, v in result.extra.items()}}

    return PredictWorker


def predict_ray(model_dir: str | Path, records: list, out: str | Path, *, task, options, model_sha256: str,
                ray: RayOptions, threads: int | None = None, device: str = "auto", progress: bool | None = None):
    """Predictions on Ray actors, `ray.part_rows` records per task; parts land in OUT/parts and are reused on
    resume. `task` is the task's spec (lookalike.tasks), `options` its typed options; returns the spec's
    Predictions, merged in record order, as the local run makes them."""
    ray_mod = _import_ray()
    part_rows = ray.part_rows
    folder = OwnedFolder(Path(out).resolve())
    if folder.status("parts") == "foreign":
        raise OutputError(f"{folder.folder / 'parts'}: exists and was not made by lookalike; refusing to write "
                          "prediction parts into it: move it away")
    parts_dir = folder.folder / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    folder.record_dir("parts")
    ids = hashlib.sha256("\n".join(r.id for r in records).encode()).hexdigest()
    settings = {"model_sha256": model_sha256, "task": task.name, "options": options.as_dict(), "part_rows": part_rows,
                "n": len(records), "ids_sha256": ids}
    settings_guard(parts_dir / "settings.json", settings, "parts of another prediction run")
    n_parts = (len(records) + part_rows - 1) // part_rows
    todo = [i for i in range(n_parts) if not (parts_dir / f"part-{i:05d}.json").exists()]
    worker_device = _worker_device(device, ray.gpus_per_worker)
    started_here = _connect(ray_mod, ray.address, ray.ray_init) if todo else False
    try:
        if todo:
            pool = _pool(ray_mod, _predict_worker_class(ray_mod), ray,
                         min(_n_workers(ray_mod, ray.workers, ray.cpus_per_worker), len(todo)),
                         str(Path(model_dir).resolve()), task, worker_device,
                         threads or max(1, int(ray.cpus_per_worker)), options)
            done_rows = len(records) - sum(len(records[i * part_rows:(i + 1) * part_rows]) for i in todo)
            bar = progress_bar(progress, total=len(records), initial=done_rows, unit="records",
                               desc=f"predict[ray] {task.name}")
            tasks = ((i, (i, records[i * part_rows:(i + 1) * part_rows])) for i in todo)
            for i, part in ordered_on_actors(ray_mod, pool, "run_part", tasks):
                atomic_write_json(parts_dir / f"part-{i:05d}.json", part, in_own_folder)  # a retried part
                bar.update(min(part_rows, len(records) - i * part_rows))
            bar.close()
    finally:
        if started_here:
            ray_mod.shutdown()
    preds: dict = {}
    extra: dict[str, dict] = {name: {} for name in task.files[1:]}
    for i in range(n_parts):
        part = load_json(parts_dir / f"part-{i:05d}.json", "prediction part")
        preds.update(part["predictions"])
        for name in extra:
            extra[name].update(part.get(Path(name).stem, {}))
    if len(preds) != len(records):
        raise LookalikeError(f"{parts_dir}: merged {len(preds)} predictions for {len(records)} records")
    return Predictions(preds, extra)
