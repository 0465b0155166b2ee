"""One loaded export running one plan: windows of records (or of cached token ids) in, pooled vectors out.

`WindowEmbedder` is the one runner shape every path uses: the local pipeline, the Python `Embedder` and the
Ray actors call `prepare` (or `from_tokens`) and `infer`; each window's `Counts` come back with its vectors and
the caller sums them (nothing is mutated across layers).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..core.precision import calibration_ranges
from ..errors import InputError, ModelError
from ..notes import NOTICE
from .batching import Batch, Encoded, TokenizerPool, token_budget_batches, tokenize
from .plan import EmbedPlan
from .runtime import OnnxModel

log = logging.getLogger(__name__)


@dataclass
class Window:
    """Tokenized rows start..start+len(ids), cut into token-budget batches."""

    start: int
    ids: list[str]
    n_tokens: np.ndarray
    truncated: np.ndarray
    n_empty: int
    batches: list[Batch]


@dataclass
class Counts:
    """What inference did: real and padded tokens, batches, empty records. Windows' counts add up."""

    real_tokens: int = 0
    padded_tokens: int = 0
    batches: int = 0
    n_empty: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


class WindowEmbedder:
    """`model` running `plan`; `pool` (optional) tokenizes in worker processes."""

    def __init__(self, model: OnnxModel, plan: EmbedPlan, pool: TokenizerPool | None = None):
        self.model, self.plan, self.pool = model, plan, pool

    def prepare(self, start: int, window: list) -> Window:
        """Tokenize a window of records (in the pool's processes when there is one) and batch it; the plan's
        prompt goes before every text, as sentence-transformers puts it."""
        n_empty = sum(1 for r in window if not r.text and not r.text_pair)
        ids = [r.id for r in window]
        if self.plan.prompt:
            window = [dataclasses.replace(r, text=self.plan.prompt + r.text) for r in window]
        enc = self.pool.tokenize(window) if self.pool is not None else \
            tokenize(self.model.encoder, window, self.plan.max_length)
        return self.from_tokens(start, ids, enc, n_empty)

    def from_tokens(self, start: int, ids: list[str], enc: Encoded, n_empty: int) -> Window:
        """Batch a window that is already tokenized (a token cache's)."""
        model = self.model
        batches = token_budget_batches(enc, self.plan.batch_tokens, model.pad_id)
        if model.io_binding:  # upload here, in the batching stage, while the previous window runs
            for b in batches:
                b.device_feeds = model.upload(model.feeds(b.input_ids, b.attention_mask, b.token_type_ids))
        return Window(start, ids, enc.n_tokens, enc.truncated, n_empty, batches)

    def infer(self, win: Window) -> tuple[np.ndarray, Counts]:
        """(pooled vectors of the window in window order, normalised and cast as planned; its counts)."""
        model, plan = self.model, self.plan
        emb = np.empty((len(win.ids), model.hidden_size), dtype=np.float32)
        counts = Counts(n_empty=win.n_empty)
        for b in win.batches:
            if b.device_feeds is not None:
                (vec,) = model.run_feeds([plan.output], b.device_feeds)
            else:
                (vec,) = model.run([plan.output], b.input_ids, b.attention_mask, b.token_type_ids)
            emb[b.rows] = vec
            counts.real_tokens += b.real_tokens
            counts.padded_tokens += b.input_ids.size
            counts.batches += 1
        bad = ~np.isfinite(emb).all(axis=1)
        if bad.any():
            first = [win.ids[i] for i in np.flatnonzero(bad)[:3]]
            raise ModelError(f"{model.dir}: model produced NaN/inf vectors for ids {first}")
        if plan.dense:  # sentence-transformers' Dense modules, after pooling and before normalising
            emb = model.apply_dense(emb)
        if plan.params.normalize:
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        if plan.params.truncate_dim is not None:  # after normalising, as sentence-transformers truncates
            emb = np.ascontiguousarray(emb[:, :plan.params.truncate_dim])
        return plan.quantize(emb), counts

    def embed_records(self, start: int, records: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, Counts]:
        """(vectors, n_tokens, truncated, counts) of a list of records starting at row `start`, window by window
        (a Ray shard)."""
        embs, nts, trs, total = [], [], [], Counts()
        for w_start, window in self.plan.windows(records, start):
            win = self.prepare(w_start, window)
            emb, counts = self.infer(win)
            embs.append(emb)
            nts.append(win.n_tokens)
            trs.append(win.truncated)
            total += counts
        return np.concatenate(embs), np.concatenate(nts), np.concatenate(trs), total


def fix_ranges(plan: EmbedPlan, model: OnnxModel, corpus, out_dir, sample=None) -> EmbedPlan:
    """The plan with its int8/uint8 ranges fixed once for the store `out_dir`: those its manifest records (a
    resumed store quantises as it began), else those of `--ranges-from` (a store or a .npy), else the minimum and
    maximum of the first `calibration_rows` records' float vectors. Other precisions: the plan as it is."""
    if not plan.needs_ranges:
        return plan
    from ..core.shards import MANIFEST, read_manifest
    from ..core.store import StoreFormat

    out_dir = Path(out_dir)
    if (out_dir / MANIFEST).is_file():
        recorded = read_manifest(out_dir, StoreFormat)["config"]
        if recorded.get("dtype") == plan.precision and "ranges" in recorded:
            return plan.with_ranges(recorded["ranges"], str(recorded.get("ranges_from", out_dir)))
    if plan.params.ranges_from:
        return plan.with_ranges(*load_ranges(plan.params.ranges_from, plan))
    n = plan.params.calibration_rows
    if sample is None:
        def sample(n: int) -> np.ndarray:  # the float vectors of the first n rows
            first = list(itertools.islice(corpus.records(), n))
            if not first:
                raise InputError("no records to calibrate the int8 ranges on", path=corpus.path)
            float_plan = dataclasses.replace(plan, params=dataclasses.replace(plan.params, dtype="float32"))
            runner = WindowEmbedder(model, float_plan)
            return np.concatenate([runner.infer(runner.prepare(s, w))[0] for s, w in float_plan.windows(first, 0)])
    x = sample(n)
    if len(x) < n:  # as sentence-transformers warns: ranges from few rows may clip the rows that come later
        log.log(NOTICE, "int8 ranges fixed from the %d rows the corpus has, fewer than the %d calibration rows asked "
                "(--calibration-rows); a later corpus's vectors outside them are clipped: give --ranges-from a "
                "larger store to share its ranges", len(x), n)
    return plan.with_ranges(calibration_ranges(x), f"the first {len(x)} rows")


def load_ranges(source: str, plan: EmbedPlan) -> tuple[np.ndarray, str]:
    """(ranges, where from) of `--ranges-from`: a store of the same model's features (its recorded ranges) or a
    .npy of shape (2, dim)."""
    path = Path(source)
    from ..core.store import open_store

    if path.is_dir():
        store = open_store(path)
        if "ranges" not in store.config:
            raise InputError("is not an int8/uint8 store (it records no ranges)", path=path, field="ranges_from")
        for key in ("model_sha256", "pooling", "normalize", "max_length", "truncate_dim"):
            if store.config.get(key) != plan.config.get(key):
                raise InputError(f"its vectors differ from this run's in {key} ({store.config.get(key)!r} vs "
                                 f"{plan.config.get(key)!r}); its ranges would not fit them", path=path,
                                 field="ranges_from")
        return np.asarray(store.config["ranges"], dtype=np.float32), f"{path} (store {store.key()})"
    from ..data.opener import open_regular

    with open_regular(path, corpus=False) as f:
        try:
            ranges = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"not a .npy array ({str(exc)[:80]})", path=path, field="ranges_from") from exc
    from ..files import sha256_file

    return ranges, f"{path} (sha256 {sha256_file(path)[:12]})"
