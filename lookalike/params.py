"""Typed parameters of each step, with their defaults in one place.

The command line and experiment files both build these. `parse_params` checks an experiment file's mapping
against the dataclass: an unknown key is an error naming the nearest valid one, a value of the wrong type
an error naming the key. Where and how a step runs (backend, Ray address, workers, device) is not a step
parameter: it comes from the command line only, so a shared experiment file cannot start a cluster job.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from .core.precision import DEFAULT_CALIBRATION_ROWS, PRECISIONS
from .errors import InputError, unknown_key_message

# auto: the model's own (sentence-transformers), else cls; the others as sentence-transformers' Pooling modes
POOLINGS = ("cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken", "auto")
DTYPES = PRECISIONS  # stored precision of a store's vectors (core.precision)
INDEXES = ("flat", "ivf", "hnsw")
SIMILARITIES = ("engine", "use", "none")

# the same choices as types, so IDEs and type checkers see them in the API's signatures (tests keep each equal
# to its tuple)
Pooling = Literal["cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken", "auto"]
Precision = Literal["float32", "float16", "int8", "uint8", "binary", "ubinary"]
Index = Literal["flat", "ivf", "hnsw"]
Device = Literal["auto", "cpu", "cuda"] | str  # "cuda:1" names a GPU
Task = Literal["feature-extraction", "question-answering", "text-classification"]
Backend = Literal["local", "ray"]
Measure = Literal["jaccard", "mutual_knn", "cknna", "cka", "cka_debiased"]


def _check(obj) -> None:
    """Types (as annotated: `normalize="yes"` is refused, not taken as true) and field metadata rules: min
    (inclusive), choices; None passes for optional fields."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if v is None:
            continue
        if f.name in hints:
            _coerce(v, hints[f.name], f.name, None)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        items = v if isinstance(v, tuple) else (v,)
        for x in items:
            if lo is not None and x < lo:
                raise InputError(f"{x!r} is below the minimum {lo}", field=f.name)
            if hi is not None and x > hi:
                raise InputError(f"{x!r} is above the maximum {hi}", field=f.name)
        if "choices" in f.metadata and v not in f.metadata["choices"]:
            raise InputError(f"{v!r} is not one of {', '.join(map(str, f.metadata['choices']))}", field=f.name)


_HINTS: dict = {}


def _hints(cls) -> dict:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def params(cls):
    """A frozen dataclass whose fields' metadata (min, max, choices) is checked on construction."""
    cls.__post_init__ = _check
    return dataclass(frozen=True)(cls)


def _min(n, **kw):
    return {"min": n, **kw}


@params
class EmbedParams:
    pooling: str = field(default="cls", metadata={"choices": POOLINGS})
    # None: the model's own (its sentence-transformers max_seq_length under pooling "auto", else its positions)
    max_length: int | None = field(default=None, metadata=_min(2))
    batch_tokens: int | None = field(default=None, metadata=_min(2))
    shard_rows: int = field(default=10000, metadata=_min(1))
    # rows sorted by length together: a shard's worth pads ~2% on real mixed text at GPU batch sizes (2,048: ~7%;
    # benchmarks/results/padding-cpu.json); windows never cross a shard, so memory stays bounded by shard_rows
    sort_window: int = field(default=10000, metadata=_min(1))
    dtype: str = field(default="float32", metadata={"choices": DTYPES})
    normalize: bool = False
    # a text put before every text, as sentence-transformers' prompts ("query: "): given, or named from the
    # model's own prompts (config_sentence_transformers.json); under pooling "auto" the model's default prompt
    prompt: str | None = None
    prompt_name: str | None = None
    # keep the first N dimensions (Matryoshka models), after normalising, as sentence-transformers' truncate_dim
    truncate_dim: int | None = field(default=None, metadata=_min(1))
    # int8/uint8: the ranges come from the first calibration_rows vectors of the corpus, or from ranges_from (a
    # store of that precision, or a .npy of shape (2, dim)); fixed once per store and recorded in its manifest
    calibration_rows: int = field(default=DEFAULT_CALIBRATION_ROWS, metadata=_min(1))
    ranges_from: str | None = None
    # long documents: overlapping windows of chunk_tokens text tokens (neighbours share chunk_stride tokens, as
    # the tokenizers' stride), one row per window (parent_id, chunk) or, with pool_chunks "mean", one per record
    chunk_tokens: int | None = field(default=None, metadata=_min(1))
    chunk_stride: int = field(default=0, metadata=_min(0))
    pool_chunks: str | None = field(default=None, metadata={"choices": ("mean",)})


@params
class KnnParams:
    k: int = field(default=10, metadata=_min(1))
    sweep: tuple[int, ...] = field(default=(), metadata=_min(1))
    index: str = field(default="flat", metadata={"choices": INDEXES})
    block_rows: int = field(default=8192, metadata=_min(1))
    # estimate the representation agreement from `sample` points drawn with `sample_seed` (each with its exact
    # neighbours among all points); None: every point (exhaustive)
    sample: int | None = field(default=None, metadata=_min(1))
    sample_seed: int = 0

    @property
    def k_max(self) -> int:
        return max((self.k, *self.sweep))

    @property
    def ks(self) -> list[int]:
        return sorted({self.k, *self.sweep})


@params
class OodParams:
    k: int = field(default=10, metadata=_min(1))
    sweep: tuple[int, ...] = field(default=(), metadata=_min(1))
    tpr: float = field(default=0.95, metadata={"min": 1e-9, "max": 1.0})
    val_fraction: float = field(default=0.1, metadata={"min": 1e-9, "max": 0.9})
    seed: int = 0

    @property
    def ks(self) -> list[int]:
        return sorted({self.k, *self.sweep})


@params
class PredictParams:
    """QA and classification prediction; max_length None means the task's default (QA 384, classification 512).
    Each task's spec (lookalike.tasks) turns these into its typed options."""

    max_length: int | None = field(default=None, metadata=_min(8))
    doc_stride: int = field(default=128, metadata=_min(1))
    n_best: int = field(default=20, metadata=_min(1))
    max_answer_length: int = field(default=30, metadata=_min(1))
    null_score_diff_threshold: float = 0.0
    batch_tokens: int | None = field(default=None, metadata=_min(8))
    f1_below: float | None = None
    cls_max_length: int | None = field(default=None, metadata=_min(8))  # classification's own length [max_length]


@params
class AttackParams:
    """BERT-Attack. max_candidates: MLM candidates per word (TextAttack's/BERT-Attack's K); top_words: the
    paper's "K=3" as it describes K (only the N most important words are attacked)."""

    mlm: str = "bert-base-uncased"
    max_candidates: int = field(default=48, metadata=_min(1))
    top_words: int | None = field(default=None, metadata=_min(1))
    n: int | None = field(default=1000, metadata=_min(1))
    seed: int = 0
    max_percent: float = field(default=0.4, metadata={"min": 0.0, "max": 1.0})
    similarity: str = field(default="engine", metadata={"choices": SIMILARITIES})
    similarity_threshold: float = 0.2
    max_length: int = field(default=512, metadata=_min(8))


@params
class LatencyParams:
    batch_sizes: tuple[int, ...] = field(default=(1, 8), metadata=_min(1))
    seq_lengths: tuple[int, ...] = field(default=(128,), metadata=_min(2))
    repeat: int = field(default=10, metadata=_min(1))


@params
class FinetuneParams:
    """None means the task's default (each task spec's finetune_defaults, lookalike.tasks)."""

    learning_rate: float | None = field(default=None, metadata=_min(0.0))
    epochs: float | None = field(default=None, metadata=_min(0.0))
    max_steps: int = -1
    batch_size: int | None = field(default=None, metadata=_min(1))
    max_length: int | None = field(default=None, metadata=_min(8))
    doc_stride: int | None = field(default=None, metadata=_min(1))
    seed: int = 42
    save_steps: int = field(default=500, metadata=_min(1))
    answerable_only: bool = False
    keep_layers: tuple[int, ...] | None = field(default=None, metadata=_min(0))
    # with a record limit: draw the limited records with this seed from the whole corpus (None: the training seed);
    # a file sorted by label would otherwise give one class. shuffle False keeps the first N.
    shuffle: bool = True
    shuffle_seed: int | None = None


MEASURE_NAMES = ("jaccard", "mutual_knn", "cknna", "cka", "cka_debiased")  # analysis.measures.MEASURES


@dataclass(frozen=True)
class AgreeParams:
    # the representation measures the report shows: the paper's kNN Jaccard, and any of the field's others
    measures: tuple[str, ...] = ("jaccard",)

    def __post_init__(self):
        for m in self.measures:
            if m not in MEASURE_NAMES:
                raise InputError(unknown_key_message(m, MEASURE_NAMES).replace("unknown key", "unknown measure"),
                                 field="measures")


STEPS: dict[str, type] = {"embed": EmbedParams, "knn": KnnParams, "ood": OodParams, "predict": PredictParams,
                          "attack": AttackParams, "latency": LatencyParams, "agree": AgreeParams}


# --------------------------------------------------------------------------- parsing experiment files

def _coerce(value, hint, key: str, where: str):
    """`value` as the annotation `hint` wants it, or InputError naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, where)
    if origin is tuple:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"expected a list, got {value!r}", record=where, field=key)
        return tuple(_coerce(v, args[0], key, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"expected true or false, got {value!r}", record=where, field=key)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"expected an integer, got {value!r}", record=where, field=key)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"expected a number, got {value!r}", record=where, field=key)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"expected a string, got {value!r}", record=where, field=key)
        return value
    return value  # pragma: no cover - every annotation above is handled


def parse_params(cls: type, values: Mapping[str, Any] | None, where: str):
    """`cls(**values)` with unknown keys and wrong types refused (InputError naming `where` and the key)."""
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        raise InputError(f"expected a mapping of parameters, got {type(values).__name__}", record=where)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in values:
        if k not in names:
            extra = (" (where and how to run comes from the command line, not from experiment files)"
                     if k in RUN_KEYS else "")
            raise InputError(unknown_key_message(k, names) + extra, record=where, field=str(k))
    kwargs = {k: _coerce(v, hints[k], k, where) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except InputError as exc:
        raise InputError(str(exc), record=where) from exc


RUN_KEYS = {"backend", "address", "workers", "gpus_per_worker", "cpus_per_worker", "runtime_env", "ray_init",
            "device", "threads", "num_gpus", "num_cpus"}


def as_key(params) -> dict:
    """A parameters object as plain JSON-able values (for cache keys and stored settings)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}
