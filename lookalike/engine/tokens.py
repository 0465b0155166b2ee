"""The token cache: a corpus tokenized once per tokenizer, read back by every model that shares it.

The paper's workload embeds the same corpora with many models that share one WordPiece vocabulary (six BERTs,
before and after fine-tuning, plus a compressed family). A token cache holds a corpus's token ids exactly as
the engine's tokenizer produces them (truncated at `max_length`, flagged), in corpus order, so `embed` reads
ids instead of text: no reader, no tokenizer, on the critical path. It is keyed by the tokenizer's content
hash (its full serialisation: vocabulary, normaliser, pre-tokeniser, post-processor), the max length and the
corpus (fingerprint and record selection), and it is a sharded, resumable, checksummed folder like a store:

    tok-00000.h5 ...   `input_ids` (all rows' ids, flat, int32), `offsets` (rows + 1, int64: row i is
                       input_ids[offsets[i]:offsets[i+1]]), `token_type_ids` (flat, int8; pairs only), `id`,
                       `n_tokens`, `truncated`, `empty` (the record's text was empty)
    manifest.json      config (tokenizer_sha256, max_length, corpus fingerprint and selection), shards

`lookalike tokenize` writes one (by default into the shared cache, `$LOOKALIKE_CACHE/tokens/<key>`), and
`embed` uses a matching one found there automatically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from ..core.manifest import clamp_length, load_manifest
from ..core.shards import ShardedWriter, ShardFormat, open_h5, read_manifest, self_contained_problem, sha_problem
from ..data import CorpusSpec
from ..errors import InputError, ModelError, StoreError
from ..files import atomic_file, cache_dir, h5_with_attr, first_difference, progress_bar, sha256_file
from .batching import Encoded, tokenize
from .plan import shard_aligned, skip_done, window_ranges
from .stages import staged
from ..core import pretrained

log = logging.getLogger(__name__)

TOKENS_FORMAT = 1
REPAIR = "re-run `lookalike tokenize` with the same arguments (it re-does damaged shards)"


def export_tokenizer(model_dir: str | Path, max_length: int, *, warn: bool = False) -> tuple:
    """(the export's fast tokenizer, `max_length` cut to the model's positions); ModelError naming the folder when
    the tokenizer does not load."""
    manifest = load_manifest(model_dir)
    try:
        tok = pretrained.tokenizer(model_dir)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{model_dir}: cannot load the tokenizer ({str(exc)[:200]})") from exc
    return tok, clamp_length(manifest, max_length, warn=warn)


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what decides a fast tokenizer's output: its full serialisation and the inputs it returns."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError("the token cache needs a fast (Rust) tokenizer")
    state = json.loads(backend.to_str())
    for runtime in ("truncation", "padding"):  # call-time settings the tokenizer keeps from its last use
        state.pop(runtime, None)
    h = hashlib.sha256(json.dumps(state, sort_keys=True).encode())
    h.update(json.dumps([list(tokenizer.model_input_names), tokenizer.padding_side,
                         tokenizer.truncation_side]).encode())
    return h.hexdigest()[:32]


def cache_config(tokenizer, corpus: CorpusSpec, max_length: int) -> dict:
    return {"tokenizer_sha256": tokenizer_fingerprint(tokenizer), "max_length": int(max_length), **corpus.identity()}


def cache_key(config: dict) -> str:
    identity = TokenFormat(config).identity(config)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def default_location(config: dict) -> Path:
    return cache_dir("tokens") / cache_key(config)


def offsets_problem(offsets: np.ndarray, rows: int, n_ids: int) -> str | None:
    """Why `offsets` do not cut `n_ids` token ids into `rows` rows (length, start, end, order), or None."""
    if len(offsets) != rows + 1:
        return f"offsets hold {len(offsets) - 1} rows, the manifest says {rows}"
    if offsets[0] != 0 or int(offsets[-1]) != n_ids:
        return "offsets do not cover the token ids"
    step = np.diff(offsets)
    if (step < 0).any():
        return f"offsets decrease at row {int(np.flatnonzero(step < 0)[0])}"
    return None


class TokenFormat(ShardFormat):
    kind = "lookalike.tokens"
    noun = "token cache"
    version = TOKENS_FORMAT
    prefix = "tok"
    provenance = ("corpus",)
    repair = REPAIR

    def write_shard(self, folder: Path, index: int, start: int, columns: dict) -> dict:
        import h5py

        enc = columns["enc"]
        final = folder / self.shard_name(index)
        with atomic_file(final, h5_with_attr("row_start", start)) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("input_ids", data=enc.ids)
            f.create_dataset("offsets", data=enc.offsets - enc.offsets[0])
            if enc.type_ids is not None:
                f.create_dataset("token_type_ids", data=enc.type_ids)
            f.create_dataset("id", data=np.array(columns["id"], dtype=object), dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("n_tokens", data=np.asarray(columns["n_tokens"], dtype=np.int32))
            f.create_dataset("truncated", data=np.asarray(columns["truncated"], dtype=bool))
            f.create_dataset("empty", data=np.asarray(columns["empty"], dtype=bool))
            f.attrs["row_start"] = start
            f.attrs["format_version"] = TOKENS_FORMAT
        return {"file": final.name, "row_start": start, "row_end": start + len(enc), "rows": len(enc),
                "sha256": sha256_file(final), "tokens": int(enc.offsets[-1] - enc.offsets[0]),
                "n_truncated": int(np.asarray(columns["truncated"]).sum())}

    def check_shard(self, folder: Path, entry: dict, manifest: dict) -> str | None:
        import h5py

        problem = sha_problem(folder, entry)
        if problem:
            return problem
        try:
            with h5py.File(folder / entry["file"], "r") as f:
                problem = self_contained_problem(f)
                if problem:
                    return problem
                if f["offsets"].shape != (entry["rows"] + 1,) or f["id"].shape != (entry["rows"],):
                    return f"holds {f['id'].shape[0]} rows, manifest says {entry['rows']}"
                off = f["offsets"][:]
                problem = offsets_problem(off, entry["rows"], f["input_ids"].shape[0])
                if problem:
                    return problem
                if not np.array_equal(np.diff(off), f["n_tokens"][:]):
                    return "n_tokens do not match the offsets"
        except (OSError, KeyError) as exc:
            return f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
        return None


class TokenCache:
    """Read side: rows in corpus order, as windows of tokenized rows (no text, no tokenizer)."""

    def __init__(self, path: Path, manifest: dict):
        self.path, self.manifest = path, manifest

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    def __len__(self) -> int:
        return self.manifest["shards"][-1]["row_end"] if self.manifest["shards"] else 0

    @property
    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.manifest["shards"])

    def shards(self, start: int = 0, vocab_size: int | None = None
               ) -> Iterator[tuple[int, Encoded, list[str], np.ndarray]]:
        """(first row, Encoded, ids, empty) of every shard that holds rows start.., read whole; token ids are
        checked to lie in 0..vocab_size-1 (a negative id would be wrapped by the model's Gather, silently)."""

        for s in self.manifest["shards"]:
            if s["row_end"] <= start:
                continue
            path = self.path / s["file"]
            with open_h5(path, what="token-cache shard") as f:
                enc = Encoded(f["input_ids"][:], f["offsets"][:],
                              f["token_type_ids"][:] if "token_type_ids" in f else None, f["truncated"][:])
                names = list(f["id"].asstr()[:])
                empty = f["empty"][:]
            problem = offsets_problem(enc.offsets, s["rows"], len(enc.ids))
            if problem:
                raise StoreError(f"{path}: {problem}; the token cache is damaged: {REPAIR}")
            if enc.ids.size and (int(enc.ids.min()) < 0 or (vocab_size and int(enc.ids.max()) >= vocab_size)):
                bad = int(enc.ids.min()) if int(enc.ids.min()) < 0 else int(enc.ids.max())
                raise StoreError(f"{path}: token id {bad} is outside the vocabulary (0..{(vocab_size or 0) - 1}); "
                                 f"the token cache is damaged: {REPAIR}")
            if enc.type_ids is not None and enc.type_ids.size and (enc.type_ids.min() < 0 or enc.type_ids.max() > 1):
                raise StoreError(f"{path}: token type ids outside 0..1; the token cache is damaged: {REPAIR}")
            yield s["row_start"], enc, names, empty

    def rows(self, start: int = 0) -> Iterator[tuple]:
        """(id, input_ids, token_type_ids or None, truncated, empty) for rows start.. in order."""
        for first, enc, names, empty in self.shards(start):
            tts = enc.token_type_ids
            for i in range(max(0, start - first), len(enc)):
                yield names[i], enc.row(i), None if tts is None else tts[i], bool(enc.truncated[i]), bool(empty[i])

    def windows(self, start: int, size: int, boundary: int, vocab_size: int | None = None
                ) -> Iterator[tuple[int, list[str], Encoded, int]]:
        """(first row, ids, Encoded, empty rows) windows cut by the engine's one rule (`plan.window_ranges`)."""
        shards = self.shards(start, vocab_size)
        have: list = []  # (first row, Encoded, ids, empty) read but not yet consumed
        for a, b in window_ranges(start, len(self), size, boundary):
            parts, names, empty = [], [], 0
            row = a
            while row < b:
                if not have or have[0][0] + len(have[0][1]) <= row:
                    if have:
                        have.pop(0)
                    have.append(next(shards))
                    continue
                first, enc, ids, emp = have[0]
                i, j = row - first, min(b, first + len(enc)) - first
                parts.append(enc.slice(i, j))
                names += ids[i:j]
                empty += int(emp[i:j].sum())
                row = first + j
            yield a, names, Encoded.concat(parts), empty


def open_tokens(path: str | Path, *, verify: bool = True) -> TokenCache:
    p = Path(path)
    if not (p / "manifest.json").exists():
        raise StoreError(f"{p}: not a token cache (no manifest.json; make one with `lookalike tokenize`)")
    manifest = read_manifest(p, TokenFormat)
    if not manifest.get("complete"):
        raise StoreError(f"{p}: token cache is incomplete; re-run `lookalike tokenize` to finish it")
    bad = TokenFormat(manifest["config"]).first_problem(p, manifest) if verify else None
    if bad:
        raise StoreError(f"{p / manifest['shards'][bad[0]]['file']}: {bad[1]}; the token cache is damaged: {REPAIR}")
    return TokenCache(p, manifest)


SPOT_ROWS = 32


def spot_check(cache: TokenCache, tokenizer, corpus: CorpusSpec, max_length: int) -> None:
    """InputError unless a deterministic sample of the cache's rows (up to SPOT_ROWS, evenly spaced, first and last
    included) equals the corpus's records tokenized again now: ids, token ids, token types, truncation. A cache
    whose ids were replaced (its checksums recomputed to match) is refused, not embedded."""
    n = len(cache)
    if n == 0:
        return
    want = sorted({int(x) for x in np.linspace(0, n - 1, min(n, SPOT_ROWS))})
    picked, wanted = {}, set(want)
    for pos, rec in enumerate(corpus.records()):
        if pos in wanted:
            picked[pos] = rec
            if len(picked) == len(wanted):
                break
    if len(picked) != len(wanted):
        raise InputError(f"{cache.path}: token cache holds {n} rows, the corpus fewer; re-run `lookalike tokenize`",
                         path=corpus.path)
    fresh = tokenize(tokenizer, [picked[p] for p in want], max_length)
    j = 0
    for first, enc, names, _ in cache.shards():
        while j < len(want) and want[j] < first + len(enc):
            row, i = want[j], want[j] - first
            same = (names[i] == picked[row].id and np.array_equal(enc.row(i), fresh.row(j))
                    and bool(enc.truncated[i]) == bool(fresh.truncated[j])
                    and (enc.type_ids is None) == (fresh.type_ids is None)
                    and (enc.type_ids is None or np.array_equal(enc.slice(i, i + 1).type_ids,
                                                                 fresh.slice(j, j + 1).type_ids)))
            if not same:
                raise InputError(f"{cache.path}: row {row} (id {names[i]!r}) is not what the tokenizer makes of the "
                                 "corpus's record there (ids replaced after it was written?); refusing the cache: "
                                 "re-run `lookalike tokenize`, or embed with --no-tokens", path=corpus.path)
            j += 1
        if j == len(want):
            return


def matching_cache(tokens: str | Path | None, config: dict, *, tokenizer=None, corpus: CorpusSpec | None = None
                   ) -> TokenCache | None:
    """The token cache to read: `tokens` if given (refused unless it matches `config`), else a complete one at the
    default location for `config`, else None. With `tokenizer` and `corpus`, a found cache is also spot-checked
    against the corpus (`spot_check`): a shared cache that fails is ignored with a warning, a named one refused."""
    if tokens is None:
        path = default_location(config)
        if not (path / "manifest.json").exists():
            return None
        try:
            cache = open_tokens(path)
        except StoreError as exc:
            log.warning("ignoring the shared token cache: %s", exc)
            return None
    else:
        cache = open_tokens(tokens)
    fmt = TokenFormat(config)
    ident, have = fmt.identity(config), fmt.identity(cache.config)
    key = first_difference(have, ident)
    if key is not None:
        raise InputError(f"{cache.path}: token cache made with other settings ({key}: {have.get(key)!r} there, "
                         f"{ident.get(key)!r} needed)")
    if tokenizer is not None and corpus is not None:
        try:
            spot_check(cache, tokenizer, corpus, int(config["max_length"]))
        except InputError as exc:
            if tokens is not None:
                raise
            log.warning("ignoring the shared token cache: %s", exc)
            return None
    return cache


def tokenize_corpus(tokenizer, corpus: CorpusSpec | str | Path, out: str | Path | None = None, *,
                    max_length: int = 512, shard_rows: int = 10000, window: int = 2048,
                    progress: bool | None = None) -> dict:
    """Tokenize `corpus` once into a token cache (default: the shared location for its key); resumable."""
    corpus = CorpusSpec.coerce(corpus)
    config = cache_config(tokenizer, corpus, max_length)
    out = Path(out) if out is not None else default_location(config)
    t0 = time.perf_counter()
    with ShardedWriter(out, TokenFormat(config), shard_rows) as w:
        if w.complete:
            return {"out": str(out), "rows": w.rows_done, "already_complete": True, "key": cache_key(config)}
        resumed = w.rows_done
        bar = progress_bar(progress, initial=resumed, desc="tokenize")
        stream = corpus.records()
        chunks = shard_aligned(skip_done(stream, resumed, corpus.path), resumed, window, shard_rows)
        n_tokens = 0
        for recs, enc in staged(chunks, lambda c: (c[1], tokenize(tokenizer, c[1], max_length)), name="tokenize"):
            w.append_columns({"id": [r.id for r in recs], "enc": enc, "n_tokens": enc.n_tokens,
                              "truncated": enc.truncated,
                              "empty": np.array([not r.text and not r.text_pair for r in recs], dtype=bool)})
            n_tokens += int(enc.n_tokens.sum())
            bar.update(len(recs))
        counts = w.finalize()
        bar.close()
    seconds = time.perf_counter() - t0
    return {"out": str(out), "key": cache_key(config), "rows": counts["rows"], "resumed_from": resumed,
            "tokens_this_run": n_tokens, "n_truncated": counts["n_truncated"], "seconds": round(seconds, 3),
            "tokens_per_s": n_tokens / seconds if seconds else 0.0, "ids": stream.provenance.ids}
