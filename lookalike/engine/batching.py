"""Tokenize a window of records, then cut it into token-budget batches of similar length.

A window's token ids are ragged arrays (`Encoded`: all rows' ids flat, plus offsets), made by the fast
tokenizer's Rust backend in one pass per row (truncated at max_length; the truncation flag is the backend's
own overflow), in this thread or in worker processes (`TokenizerPool`) that scale with cores. Batches are
padded with numpy, not row by row. Sorting by length inside a window keeps padding small while memory stays
bounded by the window; every batch carries the window positions of its rows so results go back in the
caller's order.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..core.shards import RaggedColumn
from ..data import Record
from ..errors import InputError
from .cut import cut_long


@dataclass
class Encoded(RaggedColumn):
    """Token ids of a window, unpadded, in window order: row i is ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray  # int32, every row's ids, flat
    offsets: np.ndarray  # int64, rows + 1
    type_ids: np.ndarray | None  # int8, flat like ids (pairs), or None when the model takes none
    truncated: np.ndarray  # bool: the full input was longer than max_length
    n_tokens: np.ndarray = field(init=False)  # int32, tokens used (<= max_length)

    def __post_init__(self):
        self.n_tokens = np.diff(self.offsets).astype(np.int32)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def slice(self, a: int, b: int) -> "Encoded":
        """Rows a..b (offsets rebased to 0)."""
        lo, hi = int(self.offsets[a]), int(self.offsets[b])
        return Encoded(self.ids[lo:hi], self.offsets[a:b + 1] - lo,
                       None if self.type_ids is None else self.type_ids[lo:hi], self.truncated[a:b])

    def __getitem__(self, rows: slice) -> "Encoded":
        a, b, step = rows.indices(len(self))
        if step != 1:
            raise ValueError("Encoded takes contiguous slices only")
        return self.slice(a, max(a, b))

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.offsets.nbytes + (0 if self.type_ids is None else self.type_ids.nbytes)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i]:self.offsets[i + 1]]

    @property
    def input_ids(self) -> list[np.ndarray]:
        return [self.row(i) for i in range(len(self))]

    @property
    def token_type_ids(self) -> list[np.ndarray] | None:
        if self.type_ids is None:
            return None
        return [self.type_ids[self.offsets[i]:self.offsets[i + 1]] for i in range(len(self))]

    @classmethod
    def from_lists(cls, input_ids: Sequence[Sequence[int]], token_type_ids: Sequence[Sequence[int]] | None = None,
                   truncated=None) -> "Encoded":
        lengths = np.fromiter((len(x) for x in input_ids), dtype=np.int64, count=len(input_ids))
        offsets = np.zeros(len(input_ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        n = int(offsets[-1])
        ids = np.fromiter(itertools.chain.from_iterable(input_ids), dtype=np.int32, count=n)
        tts = None
        if token_type_ids is not None:
            tts = np.fromiter(itertools.chain.from_iterable(token_type_ids), dtype=np.int8, count=n)
        trunc = np.zeros(len(input_ids), bool) if truncated is None else np.asarray(truncated, dtype=bool)
        return cls(ids, offsets, tts, trunc)

    @classmethod
    def concat(cls, parts: Sequence["Encoded"]) -> "Encoded":
        if len(parts) == 1:
            return parts[0]
        parts = [p if p.offsets[0] == 0 else p.slice(0, len(p)) for p in parts]
        starts = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
        offsets = np.concatenate([np.zeros(1, np.int64)] + [p.offsets[1:] + s for p, s in zip(parts, starts)])
        tts = None if parts[0].type_ids is None else np.concatenate([p.type_ids for p in parts])
        return cls(np.concatenate([p.ids for p in parts]), offsets, tts, np.concatenate([p.truncated for p in parts]))


@dataclass
class Batch:
    rows: np.ndarray  # positions within the window
    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None
    device_feeds: dict | None = None  # the inputs already on the model's device (OnnxModel.upload)

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())


# --------------------------------------------------------------------------- tokenizing

def _as_inputs(records: Sequence[Record]) -> list:
    # decided per record, so the ids of a row never depend on which other rows share its chunk
    return [r.text if r.text_pair is None else (r.text, r.text_pair) for r in records]


def _encode(backend, inputs: list, with_types: bool) -> Encoded:
    encs = backend.encode_batch(cut_long(backend, inputs), add_special_tokens=True)  # very long texts cut exactly
    ids = [e.ids for e in encs]
    tts = [e.type_ids for e in encs] if with_types else None
    return Encoded.from_lists(ids, tts, [len(e.overflowing) > 0 for e in encs])


def _backend(tokenizer, max_length: int):
    """A copy of the fast tokenizer's Rust backend that truncates at max_length the way transformers does
    (`truncation=True`: longest first, on the tokenizer's truncation side) and never pads. Made once per
    tokenizer and length (a copy: the caller's tokenizer keeps its own settings)."""
    from tokenizers import Tokenizer

    made = tokenizer.__dict__.setdefault("_lookalike_backends", {})
    key = (max_length, tokenizer.truncation_side)
    if key in made:
        return made[key]
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side)
    made[key] = backend  # cached only once fully set up
    return backend


def _with_types(tokenizer) -> bool:
    return "token_type_ids" in tokenizer.model_input_names


def tokenize(tokenizer, records: Sequence[Record], max_length: int) -> Encoded:
    """Fast tokenization, one pass per row; long inputs are truncated and flagged (never dropped).

    The ids are exactly transformers' batch call's, `tokenizer([text], [pair], truncation=True, max_length=...)`
    (an empty pair is still a pair).
    """
    if not records:
        return Encoded.from_lists([], [] if _with_types(tokenizer) else None)
    if not getattr(tokenizer, "is_fast", False):
        return _tokenize_slow(tokenizer, records, max_length)
    backend = _backend(tokenizer, max_length)
    try:
        return _encode(backend, _as_inputs(records), _with_types(tokenizer))
    except BaseException as exc:  # a panic in the Rust library (e.g. a regex over its retry limit) is BaseException
        if not is_panic(exc):
            raise
        bad = next((r for r in records if _panics(backend, r)), records[0])
        raise InputError(f"the model's tokenizer fails on this text ({panic_text(exc)}); the tokenizer cannot read "
                         "it: leave the record out, or use a model whose tokenizer can", record=f"record {bad.id}",
                         field="text") from exc


def is_panic(exc: BaseException) -> bool:
    """A Rust panic surfaced by PyO3 (pyo3_runtime.PanicException, a BaseException)."""
    return type(exc).__name__ == "PanicException"


def panic_text(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else "a panic")[:160]


def _panics(backend, record: Record) -> bool:
    try:
        _encode(backend, _as_inputs([record]), False)
    except BaseException as exc:
        if not is_panic(exc):
            raise
        return True
    return False


def _tokenize_slow(tokenizer, records: Sequence[Record], max_length: int) -> Encoded:
    """Python tokenizers (no Rust backend): the same ids through transformers' own call."""
    with_types = _with_types(tokenizer)
    ids, tts, trunc = [], [] if with_types else None, []
    for r in records:
        full = tokenizer(r.text, r.text_pair, truncation=False, return_token_type_ids=with_types)
        cut = tokenizer(r.text, r.text_pair, truncation=True, max_length=max_length, return_token_type_ids=with_types)
        ids.append(cut["input_ids"])
        if with_types:
            tts.append(cut["token_type_ids"])
        trunc.append(len(full["input_ids"]) > max_length)
    return Encoded.from_lists(ids, tts, trunc)


class TokenizerPool:
    """Tokenizing in worker processes, so the host scales with cores (the Rust tokenizer's own threads and the
    Python work around them stop scaling past a few cores). Same ids as `tokenize`; chunks come back in order.

    Each worker is a plain `python -m lookalike.engine.tokenize_worker` speaking pickles over its pipes (not
    multiprocessing: fork would copy the engine's live threads, spawn re-imports the caller's main script).

        with TokenizerPool(tokenizer, max_length, workers=8) as pool:
            enc = pool.tokenize(records)
    """

    def __init__(self, tokenizer, max_length: int, workers: int, chunk: int = 256):
        import queue
        import subprocess
        import sys
        from concurrent.futures import ThreadPoolExecutor

        if workers < 1:
            raise ValueError("a TokenizerPool needs at least one worker")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("tokenizing in worker processes needs a fast (Rust) tokenizer")
        self.workers, self.chunk, self.max_length = workers, chunk, max_length
        self.with_types = _with_types(tokenizer)
        # each worker tokenizes serially: the workers are the parallelism (no nested Rust thread pools)
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        self._procs = [subprocess.Popen([sys.executable, "-m", "lookalike.engine.tokenize_worker"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
                       for _ in range(workers)]
        self._idle: queue.Queue = queue.Queue()
        for p in self._procs:
            self._idle.put(p)
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="lookalike-tokenize")
        try:  # every worker loads the tokenizer now, not on the critical path of the first window
            setup = (_backend(tokenizer, max_length).to_str(), self.with_types)
            for p in self._procs:
                _send(p, setup)
            for p in self._procs:
                _receive(p)
        except BaseException:
            self.close()
            raise

    def _run(self, inputs: list) -> Encoded:
        proc = self._idle.get()
        try:
            _send(proc, inputs)
            return _receive(proc)
        finally:
            self._idle.put(proc)

    def tokenize(self, records: Sequence[Record]) -> Encoded:
        inputs = _as_inputs(records)
        if not inputs:
            return Encoded.from_lists([], [] if self.with_types else None)
        size = max(32, min(self.chunk, -(-len(inputs) // (4 * self.workers))))
        parts = [inputs[i:i + size] for i in range(0, len(inputs), size)]
        return Encoded.concat(list(self._threads.map(self._run, parts)))

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)
        for p in self._procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in self._procs:
            try:
                p.wait(timeout=10)
            except Exception:
                p.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _send(proc, obj) -> None:
    import pickle

    data = pickle.dumps(obj, protocol=5)
    try:
        proc.stdin.write(len(data).to_bytes(8, "little") + data)
        proc.stdin.flush()
    except BrokenPipeError as exc:
        raise RuntimeError(f"a tokenizer worker exited (code {proc.poll()})") from exc


def _receive(proc):
    import pickle

    head = proc.stdout.read(8)
    if len(head) < 8:
        raise RuntimeError(f"a tokenizer worker exited (code {proc.wait()})")
    status, value = pickle.loads(proc.stdout.read(int.from_bytes(head, "little")))
    if status != "ok":
        raise RuntimeError(f"a tokenizer worker failed: {value}")
    return value


# --------------------------------------------------------------------------- batching

def token_budget_batches(enc: Encoded, batch_tokens: int, pad_id: int, max_batch: int = 512,
                         batch_cost: float | None = None) -> list[Batch]:
    """The rows cut into batches whose padded size (rows × longest row) stays within `batch_tokens`, at the least
    padded tokens plus `batch_cost` (default `batch_cost_for(batch_tokens)`) per batch (`cut_batches`)."""
    order = np.argsort(-enc.n_tokens, kind="stable")
    lengths = np.maximum(enc.n_tokens[order].astype(np.int64), 1)
    cost = batch_cost_for(batch_tokens) if batch_cost is None else batch_cost
    cuts = cut_batches(lengths, batch_tokens, max_batch, cost)
    return [_pad(enc, order[a:b], int(lengths[a]), pad_id) for a, b in zip(cuts[:-1], cuts[1:])]


def batch_cost_for(batch_tokens: int) -> float:
    """What one more batch costs, in padded tokens: 1/64 of the budget (a batch's fixed cost, session run and
    kernel launches, is about the time of that many tokens on CPU budgets and on GPU budgets alike;
    benchmarks/bench_padding.py measures the cut's padding and time against the greedy one)."""
    return batch_tokens / 64


def cut_batches(lengths: np.ndarray, batch_tokens: int, max_batch: int, batch_cost: float) -> np.ndarray:
    """Batch boundaries [0, ..., n] over `lengths` sorted longest first: contiguous batches, each within the
    budget (rows × its first row's length ≤ batch_tokens, at most max_batch rows, at least one), at the least
    total padded tokens + batch_cost per batch. Dynamic programming over batch starts: O(n · rows per batch)."""
    n = len(lengths)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    caps = np.clip(batch_tokens // lengths, 1, max_batch)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)
    steps = np.arange(1, int(caps.max()) + 1, dtype=np.float64)
    for i in range(n):
        end = min(n, i + int(caps[i]))
        cand = best[i] + batch_cost + steps[: end - i] * float(lengths[i])
        seg = best[i + 1:end + 1]
        better = cand < seg
        if better.any():
            seg[better] = cand[better]
            start[i + 1:end + 1][better] = i
    cuts = [n]
    while cuts[-1] > 0:
        cuts.append(int(start[cuts[-1]]))
    return np.array(cuts[::-1], dtype=np.int64)


def _pad(enc: Encoded, rows: np.ndarray, width: int, pad_id: int) -> Batch:
    lengths = enc.n_tokens[rows]
    mask = np.arange(width)[None, :] < lengths[:, None]
    flat = (enc.offsets[rows][:, None] + np.arange(width)[None, :])[mask]
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    input_ids[mask] = enc.ids[flat]
    tt = None
    if enc.type_ids is not None:
        tt = np.zeros((len(rows), width), dtype=np.int64)
        tt[mask] = enc.type_ids[flat]
    return Batch(rows, input_ids, mask.astype(np.int64), tt)


def run_batched(model, enc: Encoded, outputs: list[str], batch_tokens: int,
                per_token: frozenset[str] | set[str] = frozenset()) -> list[list[np.ndarray]]:
    """Outputs (of an OnnxModel) for every row of `enc`, in row order, through the engine's token-budget batches.
    The outputs named in `per_token` have a token axis after the batch axis and come back unpadded (each row's
    own tokens); the others come back as they are (a batch's width is never taken for a token axis)."""
    unknown = set(per_token) - set(outputs)
    if unknown:
        raise ValueError(f"per_token names outputs not asked for: {sorted(unknown)}")
    results: list[list] = [[None] * len(enc) for _ in outputs]
    for b in token_budget_batches(enc, batch_tokens, model.pad_id):
        outs = model.run(outputs, b.input_ids, b.attention_mask, b.token_type_ids)
        for o, (name, arr) in enumerate(zip(outputs, outs)):
            for j, r in enumerate(b.rows):
                results[o][r] = arr[j, : enc.n_tokens[r]] if name in per_token else arr[j]
    return results
