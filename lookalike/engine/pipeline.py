"""The embedding pipeline: records -> tokenized windows -> token-budget batches -> ONNX Runtime -> HDF5 shards.

Three stages overlap through bounded queues: a producer thread reads and tokenizes, the calling thread
runs inference (ONNX Runtime releases the GIL), a writer thread assembles shards and writes them.
Windows never cross a shard boundary and shard boundaries are fixed multiples of `shard_rows`, so a
resumed run redoes exactly the shards that were not recorded and produces the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..data import read_corpus
from ..errors import InputError, ModelError
from .batching import Batch, token_budget_batches, tokenize
from .runtime import OnnxModel
from .store import StoreWriter

log = logging.getLogger(__name__)
_USER_TOKENIZERS_PARALLELISM = os.environ.get("TOKENIZERS_PARALLELISM")

POOL_OUTPUTS = {"cls": "cls", "mean": "mean"}


def corpus_fingerprint(path: str | Path) -> str:
    """Size and the first MiB of each file: cheap, and changes when the corpus does."""
    p = Path(path)
    if not p.exists():
        return f"name:{path}"
    h = hashlib.sha256()
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        h.update(str(f.stat().st_size).encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:32]


@dataclass
class _Window:
    start: int
    ids: list[str]
    n_tokens: np.ndarray
    truncated: np.ndarray
    n_empty: int
    batches: list[Batch]


class _Done:
    pass


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event):
    """Next item, or None once the run was stopped (so no thread waits forever after a failure)."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return None


def default_batch_tokens(device: str) -> int:
    # CPU: small batches keep the attention tensors in cache; measured on 2 cores, B x L = 1024 is ~20% faster
    # than 8192 for MiniLM fp32 at L=256 and ~40% for int8 (benchmarks/results/engine-cpu.json).
    # GPU: large batches fill the device.
    return 65536 if device == "cuda" else 1024


@dataclass
class EmbedPlan:
    """Validated settings of one embedding run, shared by the local and the Ray backends."""

    corpus: str
    fmt: str | None
    reader: dict
    output: str
    max_length: int
    batch_tokens: int
    shard_rows: int
    sort_window: int
    normalize: bool
    out_dtype: type
    config: dict
    dim: int

    def records(self):
        return read_corpus(self.corpus, self.fmt, **self.reader)

    def prepare(self, model: OnnxModel, start: int, window: list) -> _Window:
        """Tokenize a window and cut it into token-budget batches."""
        enc = tokenize(model.tokenizer, window, self.max_length)
        batches = token_budget_batches(enc, self.batch_tokens, model.pad_id)
        return _Window(start, [r.id for r in window], enc.n_tokens, enc.truncated,
                       sum(1 for r in window if not r.text and not r.text_pair), batches)

    def infer(self, model: OnnxModel, win: _Window, stats: dict) -> np.ndarray:
        """Pooled vectors of a window, in window order (normalised and cast as asked)."""
        emb = np.empty((len(win.ids), model.hidden_size), dtype=np.float32)
        for b in win.batches:
            (vec,) = model.run([self.output], b.input_ids, b.attention_mask, b.token_type_ids)
            emb[b.rows] = vec
            stats["real_tokens"] = stats.get("real_tokens", 0) + b.real_tokens
            stats["padded_tokens"] = stats.get("padded_tokens", 0) + b.input_ids.size
            stats["batches"] = stats.get("batches", 0) + 1
        bad = ~np.isfinite(emb).all(axis=1)
        if bad.any():
            first = [win.ids[i] for i in np.flatnonzero(bad)[:3]]
            raise ModelError(f"{model.dir}: model produced NaN/inf vectors for ids {first}")
        if self.normalize:
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        stats["n_empty"] = stats.get("n_empty", 0) + win.n_empty
        return emb.astype(self.out_dtype, copy=False)

    def windows(self, records: list, start: int):
        """Split the records of rows start.. into sort windows that never cross a shard boundary."""
        i = 0
        while i < len(records):
            room = min(self.sort_window, self.shard_rows - (start + i) % self.shard_rows)
            yield start + i, records[i:i + room]
            i += room


def make_plan(manifest: dict, corpus, *, fmt=None, text_field="text", pair_field=None, id_field=None, split=None,
              limit=None, every=None, offset=0, label_field=None, pooling="cls", max_length=512, batch_tokens=None,
              shard_rows=10000, sort_window=2048, dtype="float32", normalize=False, device="cpu",
              output_names=None) -> EmbedPlan:
    if pooling not in POOL_OUTPUTS:
        raise InputError(f"unknown pooling {pooling!r} (cls or mean)")
    if dtype not in ("float32", "float16"):
        raise InputError(f"unknown dtype {dtype!r} (float32 or float16)")
    if shard_rows < 1 or sort_window < 1:
        raise InputError("--shard-rows and the sort window must be positive")
    if manifest["task"] != "feature-extraction":
        raise ModelError(f"exported for {manifest['task']!r}; embedding needs a feature-extraction export "
                         "(lookalike export MODEL OUT --task feature-extraction)")
    output = POOL_OUTPUTS[pooling]
    if output not in (output_names or manifest.get("outputs", [])):
        raise ModelError(f"the ONNX graph has no {output!r} output (re-export it with lookalike)")
    max_length = min(max_length, int(manifest.get("max_position_embeddings") or 512))
    given = batch_tokens is not None
    batch_tokens = batch_tokens or default_batch_tokens(device)
    if batch_tokens < max_length:
        if given:
            raise InputError(f"--batch-tokens {batch_tokens} is smaller than --max-length {max_length}")
        batch_tokens = max_length
    config = {"model_sha256": manifest["sha256"], "model_source": manifest["source"]["model"],
              "variant": manifest["variant"]["description"], "pooling": pooling, "max_length": max_length,
              "dtype": dtype, "normalize": normalize, "shard_rows": shard_rows, "sort_window": sort_window,
              "corpus": str(corpus), "corpus_fingerprint": corpus_fingerprint(corpus), "format": fmt or "auto",
              "text_field": text_field, "pair_field": pair_field or "", "id_field": id_field or "",
              "split": split or "", "limit": limit if limit is not None else -1,
              "every": every or 1, "offset": offset}
    reader = dict(text_field=text_field, pair_field=pair_field, id_field=id_field, split=split, limit=limit,
                  every=every, offset=offset, label_field=label_field)
    return EmbedPlan(str(corpus), fmt, reader, output, max_length, batch_tokens, shard_rows, sort_window, normalize,
                     np.float16 if dtype == "float16" else np.float32, config, int(manifest["hidden_size"]))


def embed(model_dir: str | Path, corpus: str | Path, out_dir: str | Path, *, fmt: str | None = None,
          text_field: str = "text", pair_field: str | None = None, id_field: str | None = None,
          split: str | None = None, limit: int | None = None, every: int | None = None, offset: int = 0,
          label_field: str | None = None, pooling: str = "cls", max_length: int = 512,
          batch_tokens: int | None = None, shard_rows: int = 10000, sort_window: int = 2048,
          dtype: str = "float32", normalize: bool = False, device: str = "auto", threads: int | None = None,
          progress: bool | None = None, model: OnnxModel | None = None,
          on_shard: Callable[[int], None] | None = None, backend: str = "local", **ray_options) -> dict:
    """Embed every record of `corpus` with the export in `model_dir` into the store `out_dir`; return stats.

    Re-running after a crash resumes from the last complete shard; other settings into the same
    `out_dir` are refused. `model` lets callers reuse a loaded OnnxModel. backend="ray" runs the shards
    on Ray actors (see lookalike.engine.distributed) and makes the same store.
    """
    kw = dict(fmt=fmt, text_field=text_field, pair_field=pair_field, id_field=id_field, split=split, limit=limit,
              every=every, offset=offset, label_field=label_field, pooling=pooling, max_length=max_length,
              batch_tokens=batch_tokens, shard_rows=shard_rows, sort_window=sort_window, dtype=dtype,
              normalize=normalize)
    if backend == "ray":
        from .distributed import embed_ray

        return embed_ray(model_dir, corpus, out_dir, device=device, threads=threads, progress=progress, **kw,
                         **ray_options)
    if backend != "local":
        raise InputError(f"unknown backend {backend!r} (local or ray)")
    model = model or OnnxModel(model_dir, device=device, threads=threads)
    if _USER_TOKENIZERS_PARALLELISM is None:
        # On a GPU a single-threaded tokenizer is the bottleneck (measured on an H100: <= 172k real tokens/s with
        # it, 478k-1.16M with Rust-side parallel batches); on CPU inference owns the cores (parallel tokenizing
        # measured no faster on 2 cores), so it stays single-threaded there. A user's own setting wins.
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if model.device == "cuda" else "false"
    plan = make_plan(model.manifest, corpus, device=model.device, output_names=model.output_names, **kw)
    config = plan.config
    writer = StoreWriter(out_dir, config, model.hidden_size)
    if writer.complete:
        log.info("%s: store already complete, nothing to do", out_dir)
        return {"rows": writer.rows_done, "resumed_from": writer.rows_done, "already_complete": True,
                "n_truncated": writer.manifest.get("n_truncated", 0)}
    resumed_from = writer.rows_done
    total = None
    if progress is None:
        progress = sys.stderr.isatty()
    if progress:
        total = sum(1 for _ in plan.records())

    stop = threading.Event()
    q_tok: queue.Queue = queue.Queue(maxsize=3)
    q_out: queue.Queue = queue.Queue(maxsize=3)
    stats = {"real_tokens": 0, "padded_tokens": 0, "batches": 0, "n_empty": 0}

    def producer():
        try:
            records = plan.records()
            for _ in range(resumed_from):
                if next(records, None) is None:
                    raise InputError(f"corpus has fewer rows than the {resumed_from} already stored; it changed "
                                     "since the store was started", path=corpus)
            window, start = [], resumed_from

            def flush():
                return plan.prepare(model, start, window)

            for rec in records:
                window.append(rec)
                room = min(plan.sort_window, plan.shard_rows - start % plan.shard_rows)
                if len(window) == room:
                    if not _put(q_tok, flush(), stop):
                        return
                    start += len(window)
                    window = []
            if window:
                _put(q_tok, flush(), stop)
            _put(q_tok, _Done(), stop)
        except BaseException as exc:  # hand every failure to the caller's thread
            _put(q_tok, _Failed(exc), stop)

    writer_error: list[BaseException] = []

    def write():
        bar = None
        try:
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=total, initial=resumed_from, unit="rows", desc="embed", dynamic_ncols=True,
                           file=sys.stderr)
            t0 = time.perf_counter()
            buf_ids: list[str] = []
            buf_emb: list[np.ndarray] = []
            buf_nt: list[np.ndarray] = []
            buf_tr: list[np.ndarray] = []
            rows_in_shard = 0
            while True:
                item = _get(q_out, stop)
                if item is None:
                    return  # stopped by a failure elsewhere: leave the store resumable, unfinished
                if isinstance(item, _Done):
                    break
                win, emb = item
                buf_ids.extend(win.ids)
                buf_emb.append(emb)
                buf_nt.append(win.n_tokens)
                buf_tr.append(win.truncated)
                rows_in_shard += len(win.ids)
                if bar is not None:
                    bar.update(len(win.ids))
                    bar.set_postfix(tok_s=f"{stats['real_tokens'] / max(time.perf_counter() - t0, 1e-9):,.0f}")
                if rows_in_shard == plan.shard_rows:
                    writer.write_shard(buf_ids, np.concatenate(buf_emb), np.concatenate(buf_nt),
                                       np.concatenate(buf_tr))
                    if on_shard:
                        on_shard(len(writer.manifest["shards"]))
                    buf_ids, buf_emb, buf_nt, buf_tr, rows_in_shard = [], [], [], [], 0
            if buf_ids:
                writer.write_shard(buf_ids, np.concatenate(buf_emb), np.concatenate(buf_nt), np.concatenate(buf_tr))
            writer.finalize()
        except BaseException as exc:
            writer_error.append(exc)
            stop.set()
        finally:
            if bar is not None:
                bar.close()

    t_start = time.perf_counter()
    producer_thread = threading.Thread(target=producer, name="lookalike-tokenize", daemon=True)
    writer_thread = threading.Thread(target=write, name="lookalike-write", daemon=True)
    producer_thread.start()
    writer_thread.start()
    try:
        while True:
            item = q_tok.get()
            if isinstance(item, _Failed):
                raise item.exc
            if isinstance(item, _Done):
                break
            emb = plan.infer(model, item, stats)
            if writer_error or not _put(q_out, (item, emb), stop):
                break
        _put(q_out, _Done(), stop)
    except BaseException:
        stop.set()
        raise
    finally:
        writer_thread.join()
        stop.set()
        producer_thread.join(timeout=5)
    if writer_error:
        raise writer_error[0]
    return run_stats(writer, resumed_from, time.perf_counter() - t_start, stats, device=model.device,
                     out_dir=str(out_dir))


def run_stats(writer: StoreWriter, resumed_from: int, seconds: float, stats: dict, **extra) -> dict:
    """What one embedding run did (the same fields for every backend)."""
    rows = writer.rows_done - resumed_from
    return {"rows": writer.rows_done, "resumed_from": resumed_from, "rows_this_run": rows,
            "seconds": round(seconds, 3), "rows_per_s": rows / seconds if seconds else 0.0,
            "real_tokens_per_s": stats.get("real_tokens", 0) / seconds if seconds else 0.0,
            "padding_overhead": stats.get("padded_tokens", 0) / max(stats.get("real_tokens", 0), 1) - 1,
            "batches": stats.get("batches", 0), "n_truncated": writer.manifest.get("n_truncated", 0),
            "n_empty": stats.get("n_empty", 0), "shards": len(writer.manifest["shards"]), **extra}
