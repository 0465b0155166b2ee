"""What one embedding run will do, shared by the local and the Ray runners: the validated plan (settings only;
`windows.WindowEmbedder` runs it), the one rule that cuts rows into windows and shards, the one resume skip, and
the stats every runner reports.

Windows never cross a shard boundary and shard boundaries are fixed multiples of `shard_rows`, so a resumed
run redoes exactly the shards that were not recorded and produces the same bytes.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..core.manifest import ExportManifest, clamp_length
from ..core.precision import BITS, QUANTISED, check_ranges, quantize, stored_dim
from ..core.heads import FEATURE_EXTRACTION
from ..data import CorpusSpec
from ..errors import InputError, ModelError
from ..exporters.pooling import sentence_transformers_pooling
from ..notes import NOTICE
from ..params import EmbedParams

log = logging.getLogger(__name__)


def default_batch_tokens(device: str) -> int:
    # CPU: small batches keep the attention tensors in cache; GPU: large batches fill the device
    # (benchmarks/results/engine-cpu.json, gpu-cuda.json)
    return 65536 if device == "cuda" else 1024


@dataclass(frozen=True)
class RayOptions:
    """Where a run goes on Ray (command line only; never read from experiment files).

    address: None/"local" starts a local Ray, "auto" or "ray://host:10001" joins a cluster.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    part_rows: int = 256  # predict: records per task
    ray_init: dict | None = None


def shard_aligned(items: Iterable, start: int, size: int, boundary: int) -> Iterator[tuple[int, list]]:
    """(first row, items) chunks of at most `size` rows that never cross a multiple of `boundary`.

    The one rule for sort windows (size = sort window) and shards (size = boundary = shard rows).
    """
    chunk: list = []
    row = start
    room = min(size, boundary - row % boundary)
    for item in items:
        chunk.append(item)
        if len(chunk) == room:
            yield row, chunk
            row += len(chunk)
            chunk = []
            room = min(size, boundary - row % boundary)
    if chunk:
        yield row, chunk


def window_ranges(start: int, total: int, size: int, boundary: int) -> Iterator[tuple[int, int]]:
    """(first, end) row ranges of `shard_aligned` over rows start..total, for sources that know their length."""
    row = start
    while row < total:
        end = min(total, row + min(size, boundary - row % boundary))
        yield row, end
        row = end


def skip_done(records: Iterator, n: int, corpus) -> Iterator:
    """`records` after its first `n` (already stored); InputError when the corpus has fewer."""
    for _ in range(n):
        if next(records, None) is None:
            raise InputError(f"corpus has fewer rows than the {n} already stored; it changed since the store was "
                             "started", path=corpus)
    return records


@dataclass
class EmbedPlan:
    """Validated settings of one embedding run."""

    corpus: CorpusSpec
    params: EmbedParams
    output: str
    max_length: int
    batch_tokens: int
    config: dict
    dim: int
    prompt: str = ""  # put before every text (sentence-transformers' prompts)
    dense: bool = False  # the model's Dense modules applied after pooling (sentence-transformers)
    ranges: np.ndarray | None = None  # int8/uint8: (2, dim) calibration ranges, fixed for the store
    notes: tuple[tuple[int, str], ...] = ()  # (log level, text): the plan's notes (pooling, max length)

    def say_notes(self) -> None:
        """Log the plan's notes: called once the run is past every check, so a refused run prints only its
        error."""
        for level, text in self.notes:
            log.log(level, "%s", text)

    @property
    def precision(self) -> str:
        return self.params.dtype

    @property
    def stored_dim(self) -> int:
        """Columns a row takes in the store (a byte per 8 dimensions under binary/ubinary)."""
        return stored_dim(self.precision, self.dim)

    @property
    def needs_ranges(self) -> bool:
        return self.precision in QUANTISED and self.ranges is None

    def quantize(self, emb: np.ndarray) -> np.ndarray:
        return quantize(emb, self.precision, self.ranges)

    def with_ranges(self, ranges: np.ndarray, source: str) -> "EmbedPlan":
        """This plan with its int8/uint8 ranges fixed (recorded in the store's config)."""
        ranges = check_ranges(ranges, self.dim, source)
        config = {**self.config, "ranges": ranges.tolist(), "ranges_from": source}
        return dataclasses.replace(self, ranges=ranges, config=config)

    def windows(self, records: Iterable, start: int) -> Iterator[tuple[int, list]]:
        """(first row, records) sort windows from row `start`; a window never crosses a shard."""
        return shard_aligned(records, start, self.params.sort_window, self.params.shard_rows)


def model_st(manifest: dict) -> dict | None:
    """The sentence-transformers record of an export (asked of its source when the export predates it)."""
    st = manifest.get("sentence_transformers")
    source = str(manifest.get("source", {}).get("model", ""))
    if "sentence_transformers" not in manifest:
        if source and Path(source).is_dir():
            st = sentence_transformers_pooling(source)
    elif st and "max_seq_length" not in st and source and Path(source).is_dir():
        # an export made before lookalike recorded max_seq_length and prompts: those from its source (its Dense
        # weights, if any, were not saved, so its record's "supported" stands)
        fresh = sentence_transformers_pooling(source) or {}
        st = {**st, **{k: fresh.get(k) for k in ("max_seq_length", "prompts", "default_prompt_name")}}
    return st


def resolve_prompt(st: dict | None, params: EmbedParams, own: bool) -> tuple[str, str | None]:
    """(the prompt text, its name) for a run: --prompt as given, --prompt-name from the model's prompts, else the
    model's default prompt when the run is the model's own embedding (pooling "auto")."""
    prompts = (st or {}).get("prompts") or {}
    if params.prompt is not None and params.prompt_name is not None:
        raise InputError("give a prompt or a prompt name, not both", field="prompt_name")
    if params.prompt is not None:
        return params.prompt, None
    if params.prompt_name is not None:
        if params.prompt_name not in prompts:
            raise InputError(f"the model has no prompt named {params.prompt_name!r} "
                             f"({'its prompts: ' + ', '.join(sorted(prompts)) if prompts else 'it declares none'})",
                             field="prompt_name")
        return prompts[params.prompt_name], params.prompt_name
    name = (st or {}).get("default_prompt_name")
    if own and name:
        return prompts[name], name
    return "", None


OWN = "auto: the model's own"  # pooling_from of a run that is the model's own embedding


def resolve_pooling(manifest: ExportManifest, params: EmbedParams, st: dict | None,
                    notes: list) -> tuple[str, bool, str | None]:
    """(pooling, normalize, where it came from) for a run: "auto" takes the model's own (sentence-transformers)
    pooling and normalisation when the export records one lookalike's graph has, else CLS; a note is added to
    `notes` when the model's own differs from what the run uses."""
    own = None
    if st:
        own = f"{st['pooling']}{' + dense' if st.get('dense') else ''}{' + normalize' if st.get('normalize') else ''}"
    if params.pooling == "auto":
        if st and st.get("supported"):
            return st["pooling"], bool(st.get("normalize") or params.normalize), f"{OWN} ({own})"
        if st:
            _note(notes, f"{manifest.source_model}: the model's own pooling ({own}"
                  f"{', then ' + ', '.join(st['unsupported']) if st.get('unsupported') else ''}) is not one "
                  "lookalike's graph has; --pooling auto (experiment files: embed: {pooling: auto}) uses cls",
                  logging.WARNING)
            return "cls", params.normalize, f"auto: cls (the model's own, {own}, is not supported)"
        return "cls", params.normalize, "auto: cls (the model declares no pooling of its own)"
    if st and (st["pooling"], bool(st.get("normalize")), bool(st.get("dense"))) != (params.pooling, params.normalize,
                                                                                 False):
        _note(notes, f"{manifest.source_model}: this model's own embeddings are {own} (sentence-transformers); "
              f"this run uses {params.pooling}{' + normalize' if params.normalize else ''}, as asked; --pooling auto "
              "(experiment files: embed: {pooling: auto}) gives the model's own")
    return params.pooling, params.normalize, None


def _note(notes: list, text: str, level: int = NOTICE) -> None:
    notes.append((level, text))


def make_plan(manifest: ExportManifest, corpus: CorpusSpec | None, params: EmbedParams, *, device: str = "cpu",
              output_names=None) -> EmbedPlan:
    """The validated plan of a run over `corpus` (None: texts in memory, no corpus identity in the config)."""
    if manifest.task != FEATURE_EXTRACTION.name:
        raise ModelError(f"exported for {manifest.task!r}; embedding needs a feature-extraction export "
                         "(lookalike export MODEL OUT --task feature-extraction)")
    st = model_st(manifest)
    notes: list = []
    pooling, normalize, pooling_from = resolve_pooling(manifest, params, st, notes)
    own = pooling_from is not None and pooling_from.startswith(OWN)
    if pooling_from is not None or normalize != params.normalize:
        params = dataclasses.replace(params, pooling=pooling, normalize=normalize)
    output = pooling  # the graph's pooled outputs are named after the pooling ("cls", "mean")
    if output not in (output_names or manifest.outputs):
        raise ModelError(f"the ONNX graph has no {output!r} output (re-export it with lookalike)")
    max_length = resolve_max_length(manifest, params, st if own else None, notes)
    prompt, prompt_name = resolve_prompt(st, params, own)
    dense = bool(own and st.get("dense"))
    dim = int(st["dense"][-1]["out_features"]) if dense else manifest.hidden_size
    if params.truncate_dim is not None:
        if params.truncate_dim > dim:
            raise InputError(f"--truncate-dim {params.truncate_dim} is more than the model's {dim} dimensions",
                             field="truncate_dim")
        dim = params.truncate_dim
    stored_dim(params.dtype, dim)  # binary packs whole bytes: refused here, before any work
    batch_tokens = params.batch_tokens or default_batch_tokens(device)
    if batch_tokens < max_length:
        if params.batch_tokens is not None:
            raise InputError(f"--batch-tokens {batch_tokens} is smaller than --max-length {max_length}")
        batch_tokens = max_length
    config = {"model_sha256": manifest.sha256, "model_source": manifest.source_model,
              "variant": manifest.variant_description, "pooling": pooling, "max_length": max_length,
              "dtype": params.dtype, "normalize": normalize, "shard_rows": params.shard_rows,
              "sort_window": params.sort_window}
    if pooling_from is not None:
        config["pooling_from"] = pooling_from
    if prompt:
        config["prompt"] = prompt
        if prompt_name:
            config["prompt_name"] = prompt_name
    if params.truncate_dim is not None:
        config["truncate_dim"] = params.truncate_dim
    if params.dtype in BITS:
        config["bits"] = dim  # dimensions the packed bytes stand for
    if dense:
        config["dense"] = [{k: layer[k] for k in ("in_features", "out_features", "bias", "activation")} |
                           {"sha256": manifest.files.get(layer["file"], "")} for layer in st["dense"]]
    if corpus is not None:
        config.update(corpus.identity())
    return EmbedPlan(corpus, params, output, max_length, batch_tokens, config, dim, prompt, dense,
                     notes=tuple(notes))


def resolve_max_length(manifest: ExportManifest, params: EmbedParams, st: dict | None, notes: list) -> int:
    """The run's max length: --max-length cut to the model's positions; without one, the model's own
    (sentence-transformers' max_seq_length when the run is its own embedding, else its positions). A given one
    that differs from the model's own max_seq_length is said once."""
    own = (st or {}).get("max_seq_length")
    if params.max_length is None:
        return clamp_length(manifest, own or 1 << 30, warn=bool(own))
    if own and params.max_length != own:
        _note(notes, f"{manifest.source_model}: max length {params.max_length}, as asked; the model's own "
              f"(sentence-transformers' max_seq_length) is {own}")
    return clamp_length(manifest, params.max_length, warn=True)


def check_unchanged(corpus: CorpusSpec, fingerprint: str) -> None:
    """InputError when the corpus's content now differs from the fingerprint taken when the run started (edited in
    place while it was read): its rows would be labelled with content they were not made from."""
    if corpus.is_local and corpus.fingerprint() != fingerprint:
        raise InputError("the corpus changed while it was being embedded (its content fingerprint at the start "
                         "and at the end differ); the store is left unfinished and will not resume on the new "
                         "content: re-run into a new folder on a corpus that stays put while it is read",
                         path=corpus.path)


def run_stats(rows_done: int, resumed_from: int, n_truncated: int, shards: int, seconds: float, counts,
              **extra) -> dict:
    """What one embedding run did (the same fields for every backend); `counts`: the windows' summed `Counts`."""
    rows = rows_done - resumed_from
    return {"rows": rows_done, "resumed_from": resumed_from, "rows_this_run": rows,
            "seconds": round(seconds, 3), "rows_per_s": rows / seconds if seconds else 0.0,
            "real_tokens_per_s": counts.real_tokens / seconds if seconds else 0.0,
            "padding_overhead": counts.padded_tokens / max(counts.real_tokens, 1) - 1,
            "batches": counts.batches, "n_truncated": n_truncated, "n_empty": counts.n_empty, "shards": shards,
            **extra}
