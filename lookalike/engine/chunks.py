"""Long documents as overlapping token windows: one store row per window, or one per record (their mean).

Each record's text is tokenized whole (no special tokens) and cut into windows of `chunk_tokens` tokens, each
starting `chunk_tokens - chunk_stride` after the one before it, the last one ending at the text's end: the
windows of transformers' `tokenizer(text, truncation=True, max_length=chunk_tokens + 2, stride=chunk_stride,
return_overflowing_tokens=True)`. Every window is framed by the model's [CLS] ... [SEP] (with the run's prompt,
if any, after [CLS] in every window), so no window is truncated and no token of the text is dropped.

Rows of a chunked store have ids `ID#0`, `ID#1`, ... (the record's id, `#`, the window's index: unique, since the
index is a number) and record `parent_id` and `chunk`. With pool_chunks "mean" the store has one row per record,
the mean of its windows' vectors (normalised again when the run normalises).

The stream of rows is a pure function of the corpus and the settings, so a resumed run regenerates it, skips the
rows already stored and writes the same bytes; windows and shards never depend on where a run started.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..core.store import StoreWriter
from ..errors import InputError, ModelError
from ..files import progress_bar, shows_progress
from .batching import Encoded
from .cut import _counter
from .plan import EmbedPlan, check_unchanged, run_stats, shard_aligned, skip_done
from .runtime import OnnxModel
from .windows import Counts, WindowEmbedder, fix_ranges

log = logging.getLogger(__name__)


@dataclass
class Chunked:
    """One record's windows: token ids per window, framed and ready for the model."""

    id: str
    windows: list[list[int]]
    n_text_tokens: int


class Chunker:
    """Cuts records into framed token windows with a fast tokenizer's backend."""

    def __init__(self, tokenizer, chunk_tokens: int, stride: int, max_length: int, prompt: str = ""):
        if stride >= chunk_tokens:
            raise InputError(f"--chunk-stride {stride} must be smaller than --chunk-tokens {chunk_tokens} (each "
                             "window must move on)", field="chunk_stride")
        backend = getattr(tokenizer, "backend_tokenizer", None)
        cls_id, sep_id = getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "sep_token_id", None)
        if backend is None or cls_id is None or sep_id is None:
            raise ModelError("--chunk-tokens needs a fast tokenizer (tokenizer.json) with [CLS] and [SEP] tokens")
        self.counter = _counter(backend)  # the whole text's tokens (cut.py's untruncated copy of the backend)
        self.prompt_ids = self.counter.encode(prompt, add_special_tokens=False).ids if prompt else []
        self.cls, self.sep = cls_id, sep_id
        self.size, self.step = chunk_tokens, chunk_tokens - stride
        need = chunk_tokens + 2 + len(self.prompt_ids)
        if need > max_length:
            raise InputError(f"--chunk-tokens {chunk_tokens} makes windows of {need} tokens with [CLS], [SEP]"
                             f"{' and the prompt' if self.prompt_ids else ''}, more than the run's max length "
                             f"{max_length}: give at most {max_length - 2 - len(self.prompt_ids)}",
                             field="chunk_tokens")

    def starts(self, n: int) -> list[int]:
        """First token of each window over n text tokens (one empty window for an empty text)."""
        out = [0]
        while out[-1] + self.size < n:
            out.append(out[-1] + self.step)
        return out

    def __call__(self, record) -> Chunked:
        if record.text_pair is not None:
            raise InputError("--chunk-tokens cuts single texts; this corpus has text pairs (drop --pair-field)",
                             field="chunk_tokens")
        ids = self.counter.encode(record.text, add_special_tokens=False).ids if record.text else []
        head = [self.cls, *self.prompt_ids]
        windows = [head + ids[s:s + self.size] + [self.sep] for s in self.starts(len(ids))]
        return Chunked(record.id, windows, len(ids))


@dataclass
class Row:
    """One store row of a chunked run: a window (chunk level) or a whole record (pooled)."""

    id: str
    windows: list[list[int]]
    parent_id: str
    chunk: int
    n_tokens: int
    empty: bool


def chunk_rows(records: Iterable, chunker: Chunker, pooled: bool) -> Iterator[Row]:
    for rec in records:
        c = chunker(rec)
        if pooled:
            yield Row(c.id, c.windows, c.id, -1, c.n_text_tokens + 2, not c.n_text_tokens)
        else:
            for i, w in enumerate(c.windows):
                yield Row(f"{c.id}#{i}", [w], c.id, i, len(w), not c.n_text_tokens)


class ChunkEmbedder:
    """Vectors of rows: every window through the model (batched as one window of the engine), then, for pooled
    rows, the mean of a record's windows, normalised again when the run normalises; quantised as the plan says."""

    def __init__(self, model: OnnxModel, plan: EmbedPlan):
        self.plan = plan
        float_params = dataclasses.replace(plan.params, dtype="float32")
        self.runner = WindowEmbedder(model, dataclasses.replace(plan, params=float_params))
        self.with_types = "token_type_ids" in getattr(model.encoder, "model_input_names", ())

    def floats(self, start: int, rows: list[Row]) -> tuple[np.ndarray, Counts]:
        flat = [w for r in rows for w in r.windows]
        enc = Encoded.from_lists(flat, [[0] * len(w) for w in flat] if self.with_types else None)
        n_empty = sum(r.empty for r in rows)
        win = self.runner.from_tokens(start, [str(i) for i in range(len(flat))], enc, n_empty)
        emb, counts = self.runner.infer(win)
        if any(len(r.windows) != 1 for r in rows):  # pooled: the mean of each record's windows
            sizes = np.array([len(r.windows) for r in rows])
            emb = np.add.reduceat(emb, np.concatenate([[0], np.cumsum(sizes)[:-1]]), axis=0) / sizes[:, None]
            if self.plan.params.normalize:
                emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            emb = emb.astype(np.float32)
        return emb, counts

    def __call__(self, start: int, rows: list[Row]) -> tuple[np.ndarray, Counts]:
        emb, counts = self.floats(start, rows)
        return self.plan.quantize(emb), counts


def embed_chunked(model: OnnxModel, plan: EmbedPlan, corpus, out_dir: str | Path, *, progress: bool | None = None,
                  on_shard=None) -> dict:
    """`pipeline.embed` for --chunk-tokens: the same store, resume and checks, with rows cut from long texts."""
    params = plan.params
    if plan.dense:
        raise InputError("--chunk-tokens with the model's Dense modules is not supported yet (pool the windows "
                         "with --pooling mean/cls)", field="chunk_tokens")
    pooled = params.pool_chunks == "mean"
    chunker = Chunker(model.encoder, params.chunk_tokens, params.chunk_stride, plan.max_length, plan.prompt)
    config = {**plan.config, "chunk_tokens": params.chunk_tokens, "chunk_stride": params.chunk_stride,
              "pool_chunks": params.pool_chunks or "none",
              "rows": "one per record (mean of its windows)" if pooled else "one per window: id ID#<window>"}
    plan = dataclasses.replace(plan, config=config)
    runner = ChunkEmbedder(model, plan)

    def sample(n: int) -> np.ndarray:
        first = list(itertools.islice(chunk_rows(corpus.records(), chunker, pooled), n))
        if not first:
            raise InputError("no records to calibrate the int8 ranges on", path=corpus.path)
        return np.concatenate([runner.floats(s, w)[0] for s, w in plan.windows(first, 0)])

    if plan.needs_ranges:
        plan = fix_ranges(plan, model, corpus, out_dir, sample=sample)
        runner.plan = plan
    with StoreWriter(out_dir, plan.config, plan.stored_dim, params.shard_rows, on_shard=on_shard,
                     chunked=not pooled) as writer:
        if writer.complete:
            return {"rows": writer.rows_done, "resumed_from": writer.rows_done, "already_complete": True,
                    "n_truncated": 0}
        resumed_from = writer.rows_done
        plan.say_notes()
        t0 = time.perf_counter()
        rows = skip_done(chunk_rows(corpus.records(), chunker, pooled), resumed_from, corpus.path)
        total = corpus.count() if pooled and shows_progress(progress) else None
        bar = progress_bar(progress, total=total, initial=resumed_from, desc="embed (chunks)")
        done = Counts()
        try:
            for start, window in shard_aligned(rows, resumed_from, params.sort_window, params.shard_rows):
                emb, counts = runner(start, window)
                writer.append([r.id for r in window], emb, np.array([r.n_tokens for r in window]),
                              np.zeros(len(window), bool),
                              parents=None if pooled else ([r.parent_id for r in window],
                                                           np.array([r.chunk for r in window])))
                done += counts
                bar.update(len(window))
            check_unchanged(corpus, plan.config["corpus_fingerprint"])
            written = writer.finalize()
        finally:
            bar.close()
    return run_stats(written["rows"], resumed_from, 0, written["shards"], time.perf_counter() - t0, done,
                     device=model.device, out_dir=str(out_dir), pooling=plan.config["pooling"],
                     normalize=plan.config["normalize"], chunk_tokens=params.chunk_tokens,
                     chunk_stride=params.chunk_stride, pool_chunks=params.pool_chunks or "none")
