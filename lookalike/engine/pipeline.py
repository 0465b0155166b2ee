"""The embedding pipeline: records -> tokenized windows -> token-budget batches -> ONNX Runtime -> HDF5 shards.

Stages overlap through bounded queues (`stages.staged`): one thread reads and cuts windows, one tokenizes,
one runs inference (ONNX Runtime releases the GIL), and the calling thread hands vectors to the store
writer, which writes each shard as soon as it is full.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Callable

from ..core.session import physical_cores
from ..core.store import StoreWriter
from ..data import CorpusSpec
from ..errors import InputError
from ..files import progress_bar, shows_progress
from ..params import Backend, Device, EmbedParams
from .batching import TokenizerPool
from .distributed import embed_ray
from .plan import RayOptions, check_unchanged, make_plan, run_stats, skip_done
from .runtime import OnnxModel
from .stages import staged
from .tokens import cache_config, matching_cache
from .windows import Counts, WindowEmbedder, fix_ranges

log = logging.getLogger(__name__)


def default_tokenize_workers(device: str) -> int:
    """Tokenizing processes by default: none on the CPU device (inference takes every core and the tokenizer
    overlaps it in a thread); all cores but two on CUDA (one drives the device, one reads and writes)."""
    return 0 if device == "cpu" else max(1, physical_cores() - 2)


def embed(model_dir: str | Path, corpus: CorpusSpec | str | Path, out_dir: str | Path,
          params: EmbedParams | None = None, *, device: Device = "auto", threads: int | None = None,
          progress: bool | None = None, model: OnnxModel | None = None,
          on_shard: Callable[[int], None] | None = None, backend: Backend = "local",
          ray: RayOptions | None = None, tokens: str | Path | bool | None = None,
          tokenize_workers: int | None = None) -> dict:
    """Embed every record of `corpus` with the export in `model_dir` into the store `out_dir`.

    Args:
        model_dir: an export folder (`lookalike export`).
        corpus: a CorpusSpec or a corpus path.
        out_dir: the store folder.
        params: the embedding settings (EmbedParams; None: the defaults).
        device, threads: as `Embedder`'s. progress: a progress bar (None: at a terminal).
        model: a loaded OnnxModel to reuse. on_shard: called with each shard's index as it is recorded.
        backend: "local" or "ray" (shards on Ray actors; the same store). ray: RayOptions.
        tokens, tokenize_workers: see below.

    Returns:
        The run's stats (rows, rows/s, truncated rows, shards, the store's path and settings).

    Re-running after a crash resumes from the last complete shard; other settings into the same `out_dir`
    are refused. `model` lets callers reuse a loaded OnnxModel. backend="ray" runs the shards on Ray actors
    (lookalike.engine.distributed) and makes the same store.
    tokens: a token cache (`lookalike tokenize`) to read instead of tokenizing the text; None uses a matching
    cache from the shared location when one exists; False never reads one. The store is the same either way.
    tokenize_workers: processes that tokenize the text (None: none on the CPU device, where inference takes every
    core; all cores but two on CUDA, where the host must keep up with the device). The store is the same.
    """
    corpus = CorpusSpec.coerce(corpus)
    params = params or EmbedParams()
    if backend == "ray":
        return embed_ray(model_dir, corpus, out_dir, params, ray=ray or RayOptions(), device=device,
                         threads=threads, progress=progress)
    if backend != "local":
        raise InputError(f"unknown backend {backend!r} (local or ray)")
    model = model or OnnxModel(model_dir, device=device, threads=threads)
    plan = make_plan(model.manifest, corpus, params, device=model.device, output_names=model.output_names)
    if params.chunk_tokens is not None:
        from .chunks import embed_chunked

        return embed_chunked(model, plan, corpus, out_dir, progress=progress, on_shard=on_shard)
    plan = fix_ranges(plan, model, corpus, out_dir)
    with StoreWriter(out_dir, plan.config, plan.stored_dim, params.shard_rows, on_shard=on_shard) as writer, \
            contextlib.ExitStack() as stack:
        if writer.complete:
            log.info("%s: store already complete, nothing to do", out_dir)
            return {"rows": writer.rows_done, "resumed_from": writer.rows_done, "already_complete": True,
                    "n_truncated": writer.manifest.get("n_truncated", 0)}
        resumed_from = writer.rows_done
        plan.say_notes()
        t0 = time.perf_counter()
        cache = pool = stream = None
        if plan.prompt and tokens not in (None, False):
            raise InputError(f"{tokens}: a token cache holds the texts without the prompt {plan.prompt!r}; drop "
                             "--tokens (the text is tokenized with its prompt) or the prompt")
        if tokens is not False and not plan.prompt:
            cache = matching_cache(tokens, cache_config(model.encoder, corpus, plan.max_length),
                                   tokenizer=model.encoder, corpus=corpus)
        if cache is not None:  # ids, not text: no reader or tokenizer on the critical path
            windows = cache.windows(resumed_from, params.sort_window, params.shard_rows, model.vocab_size)
            runner = WindowEmbedder(model, plan)
            prepare = lambda w: runner.from_tokens(*w)  # noqa: E731
            total = len(cache)
        else:
            stream = corpus.records()
            windows = plan.windows(skip_done(stream, resumed_from, corpus.path), resumed_from)
            workers = default_tokenize_workers(model.device) if tokenize_workers is None else tokenize_workers
            if workers and getattr(model.encoder, "is_fast", False):
                pool = stack.enter_context(TokenizerPool(model.encoder, plan.max_length, workers))
            runner = WindowEmbedder(model, plan, pool)
            prepare = lambda w: runner.prepare(*w)  # noqa: E731
            total = corpus.count() if shows_progress(progress) else None  # a bar with an ETA
        bar = progress_bar(progress, total=total, initial=resumed_from, desc="embed")
        done = Counts()
        try:
            for win, (emb, counts) in staged(windows, prepare, lambda win: (win, runner.infer(win)),
                                             name="lookalike-embed"):
                writer.append(win.ids, emb, win.n_tokens, win.truncated)
                done += counts
                bar.update(len(win.ids))
                bar.set_postfix(tok_s=f"{done.real_tokens / max(time.perf_counter() - t0, 1e-9):,.0f}")
            if cache is None:
                check_unchanged(corpus, plan.config["corpus_fingerprint"])
            written = writer.finalize()
        finally:
            bar.close()
    return run_stats(written["rows"], resumed_from, written["n_truncated"], written["shards"],
                     time.perf_counter() - t0, done, device=model.device, out_dir=str(out_dir),
                     ids=stream.provenance.ids if stream is not None else None,
                     tokens_from=str(cache.path) if cache is not None else None,
                     tokenize_workers=pool.workers if pool is not None else 0,
                     pooling=plan.config["pooling"], normalize=plan.config["normalize"],
                     pooling_from=plan.config.get("pooling_from"))
