"""The embedding pipeline: records -> tokenized windows -> token-budget batches -> ONNX Runtime -> HDF5 shards.

Stages overlap through bounded queues (`stages.staged`): one thread reads and cuts windows, one tokenizes,
one runs inference (ONNX Runtime releases the GIL), and the calling thread hands vectors to the store
writer, which writes each shard as soon as it is full.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from ..data import CorpusSpec
from ..errors import InputError
from ..files import progress_bar
from ..params import EmbedParams
from .plan import RayOptions, make_plan, run_stats, skip_done
from .runtime import OnnxModel
from .stages import staged
from .store import StoreWriter

log = logging.getLogger(__name__)


def embed(model_dir: str | Path, corpus: CorpusSpec | str | Path, out_dir: str | Path,
          params: EmbedParams | None = None, *, device: str = "auto", threads: int | None = None,
          progress: bool | None = None, model: OnnxModel | None = None,
          on_shard: Callable[[int], None] | None = None, backend: str = "local",
          ray: RayOptions | None = None) -> dict:
    """Embed every record of `corpus` with the export in `model_dir` into the store `out_dir`; return stats.

    Re-running after a crash resumes from the last complete shard; other settings into the same `out_dir`
    are refused. `model` lets callers reuse a loaded OnnxModel. backend="ray" runs the shards on Ray actors
    (lookalike.engine.distributed) and makes the same store.
    """
    corpus = CorpusSpec.coerce(corpus)
    params = params or EmbedParams()
    if backend == "ray":
        from .distributed import embed_ray

        return embed_ray(model_dir, corpus, out_dir, params, ray=ray or RayOptions(), device=device,
                         threads=threads, progress=progress)
    if backend != "local":
        raise InputError(f"unknown backend {backend!r} (local or ray)")
    model = model or OnnxModel(model_dir, device=device, threads=threads)
    plan = make_plan(model.manifest, corpus, params, device=model.device, output_names=model.output_names)
    with StoreWriter(out_dir, plan.config, plan.dim, params.shard_rows, on_shard=on_shard) as writer:
        if writer.complete:
            log.info("%s: store already complete, nothing to do", out_dir)
            return {"rows": writer.rows_done, "resumed_from": writer.rows_done, "already_complete": True,
                    "n_truncated": writer.manifest.get("n_truncated", 0)}
        resumed_from = writer.rows_done
        t0 = time.perf_counter()
        stats: dict = {}
        info: dict = {}
        bar = progress_bar(progress, total=corpus.count() if progress else None, initial=resumed_from, desc="embed")
        windows = plan.windows(skip_done(plan.records(info), resumed_from, corpus.path), resumed_from)
        try:
            for win, emb in staged(windows, lambda w: plan.prepare(model, *w),
                                   lambda win: (win, plan.infer(model, win, stats)), name="lookalike-embed"):
                writer.append(win.ids, emb, win.n_tokens, win.truncated)
                bar.update(len(win.ids))
                bar.set_postfix(tok_s=f"{stats['real_tokens'] / max(time.perf_counter() - t0, 1e-9):,.0f}")
            counts = writer.finalize()
        finally:
            bar.close()
    return run_stats(counts["rows"], resumed_from, counts["n_truncated"], counts["shards"], time.perf_counter() - t0,
                     stats, device=model.device, out_dir=str(out_dir), ids=info.get("ids"))
