"""HDF5 embedding stores: sharded, checksummed, resumable, verified on read; one virtual entry point for HDF5 tools.

Layout of a store folder:
    part-00000.h5 ...   datasets `embedding` (rows × dim), `id` (UTF-8), `n_tokens` (int32), `truncated` (bool),
                        attributes: model_sha256, pooling, max_length, dtype, normalize, row_start, row_end
    manifest.json       config, dim, shards [{file, row_start, row_end, rows, sha256}], complete, totals
    embeddings.h5       (when complete) virtual datasets `embedding`, `n_tokens`, `truncated` over all shards,
                        plus a real `id` dataset: any HDF5 tool sees one array
    .lookalike.lock     held (flock) by the one writer of the folder

Every file is written under a temporary name unique to its writer, fsynced, renamed, and the folder fsynced;
the manifest is replaced atomically after the shard it lists, so a crash leaves either the old state or the
new one. A writer only ever removes files whose names the store owns (its shard, manifest and entry names and
their temporaries), and refuses a folder that holds anything else. Readers check every shard against the
manifest (sha256, rows, shape) before use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import StoreError
from ..files import WriterLock, atomic_file, h5_with_attr, owned_tmp, sha256_file
from .identity import FEATURE_FIELDS, features
from .precision import BITS, FLOATS, PRECISIONS, precision_of, refuse_quantised, signs, stored_dtype
from .shards import MANIFEST, ShardedWriter, ShardFormat, open_h5, read_manifest, self_contained_problem, sha_problem

log = logging.getLogger(__name__)

STORE_FORMAT = 1
ENTRY = "embeddings.h5"
# recorded for provenance, not part of a store's identity (the corpus fingerprint and model hash are)
PROVENANCE = ("corpus", "model_source")
REPAIR = "re-run the `lookalike embed` command that made it (it re-does damaged shards)"


def write_shard_file(out_dir: Path, index: int, start: int, ids: list[str], embedding: np.ndarray,
                     n_tokens: np.ndarray, truncated: np.ndarray, config: dict, parents=None) -> dict:
    """Write shard `index` (rows start..start+len) under a temporary name, fsync, rename; return its manifest entry.

    Safe to call from any process (Ray workers write their own shards); the manifest is the caller's job.
    """
    import h5py

    out_dir = Path(out_dir)
    end = start + len(ids)
    final = out_dir / StoreFormat.shard_name(index)
    # a shard of these rows may be replaced (a re-done or retried shard); anything else at the name is refused
    with atomic_file(final, h5_with_attr("row_start", start)) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("embedding", data=embedding)
        f.create_dataset("id", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("n_tokens", data=np.asarray(n_tokens).astype(np.int32))
        f.create_dataset("truncated", data=np.asarray(truncated).astype(bool))
        if parents is not None:  # a chunked store: each row's record and window
            f.create_dataset("parent_id", data=np.array(parents[0], dtype=object), dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("chunk", data=np.asarray(parents[1]).astype(np.int32))
        for k, v in config.items():
            if isinstance(v, (str, int, float, bool)):
                f.attrs[k] = v
        f.attrs["row_start"] = start
        f.attrs["row_end"] = end
        f.attrs["format_version"] = STORE_FORMAT
    return {"file": final.name, "row_start": start, "row_end": end, "rows": len(ids), "sha256": sha256_file(final),
            "n_truncated": int(np.asarray(truncated).sum())}


# the config fields readers decide on, by type (others are provenance, recorded as embed wrote them)
_CONFIG_TYPES = {"model_sha256": str, "pooling": str, "normalize": bool, "max_length": int, "dtype": str,
                 "truncate_dim": (int, type(None)), "bits": int, "corpus_fingerprint": str, "format": str,
                 "text_field": str, "pair_field": str, "id_field": str, "split": str, "limit": int, "every": int,
                 "offset": int, "shard_rows": int, "chunk": (dict, type(None))}


class StoreManifest(dict):
    """A store's manifest (`manifest.json` plus its journal) as one read-only value, checked as a whole when
    loaded: the shard chain, `dim`, `complete`, and the type of every config field a reader decides on. Readers
    ask its accessors; it is still the JSON object (a dict), so it pickles (Ray) and prints as such."""

    def _frozen(self, *args, **kwargs):
        raise TypeError("a store manifest is read-only; a store changes only through its writer")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = __ior__ = _frozen

    def __reduce__(self):
        return StoreManifest, (dict(self),)

    @property
    def dim(self) -> int:
        """Stored width: dimensions of a float store, bytes of a binary one."""
        return int(self["dim"])

    @property
    def config(self) -> dict:
        return self["config"]

    @property
    def shards(self) -> list[dict]:
        """Shard entries in row order (file, row_start, row_end, rows, sha256)."""
        return self["shards"]

    @property
    def rows(self) -> int:
        return self["shards"][-1]["row_end"] if self["shards"] else 0

    @property
    def complete(self) -> bool:
        return bool(self.get("complete"))

    @property
    def precision(self) -> str:
        return precision_of(self["config"])

    @property
    def n_truncated(self) -> int:
        return int(self.get("n_truncated") or 0)


def manifest_problem(manifest: dict) -> str | None:
    """Why a store manifest (its shard chain already checked) is not whole and typed, or None."""
    dim = manifest.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        return f"field 'dim' is {dim!r}, not a positive integer"
    if not isinstance(manifest.get("complete", False), bool):
        return f"field 'complete' is {manifest['complete']!r}, not true or false"
    for key, typ in _CONFIG_TYPES.items():
        value = manifest["config"].get(key)
        if key in manifest["config"] and (not isinstance(value, typ) or (isinstance(value, bool) and typ is int)):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in (typ if isinstance(typ, tuple)
                                                                                    else (typ,)))
            return f"field 'config.{key}' is {type(value).__name__}, not {names}"
    if precision_of(manifest["config"]) not in PRECISIONS:
        return f"field 'config.dtype' is {manifest['config']['dtype']!r}, not one of {', '.join(PRECISIONS)}"
    return None


def _read_manifest(folder: Path) -> StoreManifest:
    manifest = read_manifest(folder, StoreFormat)
    if "dim" not in manifest:
        raise StoreError(f"{folder / MANIFEST}: not a store manifest (no dim)")
    problem = manifest_problem(manifest)
    if problem:
        raise StoreError(f"{folder / MANIFEST}: {problem}; the manifest is damaged (edited by hand?): {REPAIR}")
    return StoreManifest(manifest)


CHUNK_COLUMNS = ("parent_id", "chunk")  # a chunked store's rows: the record and the window each came from


def is_chunked(config: dict | None) -> bool:
    """Whether a store's rows are windows of records (--chunk-tokens without --pool-chunks)."""
    return bool(config) and config.get("chunk_tokens") is not None and config.get("pool_chunks") == "none"


# shard attributes that must say what the manifest's config says (an edit of either is caught)
SHARD_ATTRS = ("model_sha256", "pooling", "normalize", "max_length", "dtype")


def check_shard(folder: Path, shard: dict, dim: int, config: dict | None = None) -> str | None:
    """Why the shard file does not match its manifest entry (missing, checksum, rows, shape, row range, and the
    settings it was written with), or None."""
    import h5py

    path = folder / shard["file"]
    problem = sha_problem(folder, shard)
    if problem:
        return problem
    try:
        with h5py.File(path, "r") as f:
            problem = self_contained_problem(f)
            if problem:
                return problem
            rows = shard["rows"]
            if f["embedding"].shape != (rows, dim):
                return f"embedding shape {f['embedding'].shape}, manifest says ({rows}, {dim})"
            for name in ("id", "n_tokens", "truncated") + (CHUNK_COLUMNS if is_chunked(config) else ()):
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    return f"has no {name!r} dataset"
                if f[name].shape != (rows,):
                    return f"{name} has shape {f[name].shape}, manifest says {rows} rows"
                if name in ("id", "parent_id") and h5py.check_string_dtype(f[name].dtype) is None:
                    return f"its {name!r} dataset holds {f[name].dtype} values, not strings"
            if int(f.attrs["row_start"]) != shard["row_start"]:
                return f"row_start {int(f.attrs['row_start'])}, manifest says {shard['row_start']}"
            if "row_end" in f.attrs and int(f.attrs["row_end"]) != shard["row_end"]:
                return f"row_end {int(f.attrs['row_end'])}, manifest says {shard['row_end']}"
            for key in SHARD_ATTRS if config else ():
                if key in f.attrs and key in config:
                    have = f.attrs[key]
                    if getattr(have, "ndim", 0) != 0:
                        return f"its attribute {key!r} is an array of shape {have.shape}, not one value"
                    have = have.item() if hasattr(have, "item") else have
                    if have != config[key]:
                        return f"written with {key} {have!r}, the manifest's config says {config[key]!r}"
    except (OSError, KeyError, TypeError, ValueError) as exc:
        return f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def entry_problem(folder: Path, manifest: dict) -> str | None:
    """Why the entry file (`embeddings.h5`, for HDF5 tools) would show other data than the shards: a virtual
    source outside this store's listed shards, a link out of the file, other datasets. None when it is absent
    (an incomplete store) or right."""
    import h5py

    path = folder / ENTRY
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file():
        return "is not a regular file"
    shards = {s["file"] for s in manifest["shards"]}
    try:
        with h5py.File(path, "r") as f:
            names = set(f)
            want = {"embedding", "n_tokens", "truncated", "id"} | (set(CHUNK_COLUMNS) if is_chunked(
                manifest.get("config")) else set())
            if names != want:
                return f"holds {sorted(names)}, expected {', '.join(sorted(want))}"
            for name in names:
                link = f.get(name, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    return f"'{name}' is a link to another file or path"
                ds = f[name]
                if ds.external:
                    return f"dataset '{name}' keeps its data in external files"
                if name in ("id", "parent_id"):
                    if ds.is_virtual:
                        return f"dataset '{name}' is virtual"
                    continue
                if not ds.is_virtual:
                    return f"dataset '{name}' is not a view of the shards"
                for src in ds.virtual_sources():
                    if src.file_name not in shards:
                        return f"dataset '{name}' reads from {src.file_name!r}, which is not one of this store's shards"
    except OSError as exc:
        return f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def _is_entry(path: Path) -> bool:
    """An entry file lookalike wrote earlier (a store finalised again after shards were re-done)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return set(f) >= {"embedding", "id"} and f["embedding"].is_virtual
    except (OSError, ValueError, KeyError):
        return False


class StoreFormat(ShardFormat):
    kind = "lookalike.store"
    noun = "store"
    version = STORE_FORMAT
    prefix = "part"
    entry_files = (ENTRY,)
    provenance = PROVENANCE
    repair = REPAIR

    def __init__(self, config: dict, dim: int):
        super().__init__(config)
        self.dim = dim

    def manifest_fields(self) -> dict:
        return {"dim": self.dim}

    def write_shard(self, folder: Path, index: int, start: int, columns: dict) -> dict:
        parents = (columns["parent_id"], columns["chunk"]) if columns.get("parent_id") is not None else None
        return write_shard_file(folder, index, start, columns["id"], columns["embedding"], columns["n_tokens"],
                                columns["truncated"], self.config, parents)

    def check_shard(self, folder: Path, entry: dict, manifest: dict) -> str | None:
        return check_shard(folder, entry, int(manifest.get("dim", self.dim)), manifest.get("config"))

    def finalize(self, folder: Path, manifest: dict) -> None:
        """The single HDF5 entry point: virtual datasets over all shards, plus the ids."""
        import h5py

        shards = manifest["shards"]
        total = shards[-1]["row_end"]
        dtype = stored_dtype(precision_of(self.config))
        chunked = is_chunked(self.config)
        with atomic_file(folder / ENTRY, _is_entry) as tmp, h5py.File(tmp, "w") as f:
            for name, dt, shape in (("embedding", dtype, (total, self.dim)), ("n_tokens", np.int32, (total,)),
                                    ("truncated", bool, (total,))) + ((("chunk", np.int32, (total,)),) if chunked
                                                                      else ()):
                layout = h5py.VirtualLayout(shape=shape, dtype=dt)
                for s in shards:
                    src_shape = (s["rows"], self.dim) if name == "embedding" else (s["rows"],)
                    layout[s["row_start"]:s["row_end"]] = h5py.VirtualSource(s["file"], name, shape=src_shape)
                f.create_virtual_dataset(name, layout)
            for column in ("id", "parent_id") if chunked else ("id",):
                # a shard at a time: never every id of the store in memory
                ds = f.create_dataset(column, shape=(total,), dtype=h5py.string_dtype("utf-8"))
                for s in shards:
                    with open_h5(folder / s["file"]) as sf:
                        ds[s["row_start"]:s["row_end"]] = sf[column][:]
            for k, v in self.config.items():
                if isinstance(v, (str, int, float, bool)):
                    f.attrs[k] = v


class StoreWriter(ShardedWriter):
    """Writes an embedding store in row order (see ShardedWriter): `append` buffers vectors and writes a shard
    at every `shard_rows` boundary; `finalize` writes the last shard and the entry point.

        with StoreWriter(out, config, dim, shard_rows) as w:
            for ids, emb, n_tok, trunc in batches:
                w.append(ids, emb, n_tok, trunc)
            counts = w.finalize()
    """

    def __init__(self, out_dir: str | Path, config: dict, dim: int, shard_rows: int,
                 on_shard: Callable[[int], None] | None = None, chunked: bool = False):
        super().__init__(out_dir, StoreFormat(config, dim), shard_rows, on_shard)
        self.dim = dim
        self.chunked = chunked

    def append(self, ids: list[str], embedding: np.ndarray, n_tokens: np.ndarray, truncated: np.ndarray,
               parents: tuple[list[str], np.ndarray] | None = None) -> None:
        """Rows in order; `parents` (parent ids, window indexes) for a chunked store's rows."""
        if embedding.ndim != 2 or embedding.shape[1] != self.dim:
            raise StoreError(f"{self.dir}: embeddings of shape {embedding.shape} for a store of dim {self.dim}")
        if (parents is not None) != self.chunked:
            raise StoreError(f"{self.dir}: rows {'without' if self.chunked else 'with'} parent ids for a "
                             f"{'chunked' if self.chunked else 'plain'} store")
        columns = {"id": list(ids), "embedding": embedding, "n_tokens": np.asarray(n_tokens),
                   "truncated": np.asarray(truncated)}
        if parents is not None:
            columns.update(parent_id=list(parents[0]), chunk=np.asarray(parents[1]))
        self.append_columns(columns)


def ids_sha256(ids) -> str:
    """sha256 of ids in order (one NUL after each): the identity of a draw's points, or of a whole universe."""
    import hashlib

    h = hashlib.sha256()
    for x in ids:
        h.update(str(x).encode() + b"\0")
    return h.hexdigest()


def id_digests(chunks) -> np.ndarray:
    """uint64 blake2b digests of ids given as chunks of str or UTF-8 bytes, in order."""
    import hashlib

    parts = []
    for chunk in chunks:
        raw = b"".join(hashlib.blake2b(x if isinstance(x, bytes) else str(x).encode(), digest_size=8).digest()
                       for x in chunk)
        parts.append(np.frombuffer(raw, dtype=np.uint64))
    return np.concatenate(parts) if parts else np.empty(0, np.uint64)


def first_repeat(digests: np.ndarray, ids_at) -> tuple[tuple[int, int], str] | None:
    """((first row, later row), id) of the first id in row order held twice, or None: sorting the 64-bit digests
    (O(n) memory, no Python set), then confirming equal digests on the ids (`ids_at(rows)`)."""
    if len(digests) < 2:
        return None
    order = np.argsort(digests, kind="stable")
    same = np.flatnonzero(digests[order][1:] == digests[order][:-1])
    best = None
    for at in same:
        i, j = int(order[at]), int(order[at + 1])
        a, b = ids_at(np.array([i, j]))
        if a == b and (best is None or j < best[0][1]):
            best = ((i, j), str(a))
    return best


@dataclass
class Store:
    """Read side of a store: lengths, ids and blockwise iteration without loading everything."""

    path: Path
    manifest: StoreManifest

    @property
    def config(self) -> dict:
        return self.manifest.config

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def __len__(self) -> int:
        return self.manifest.rows

    def features(self) -> dict:
        """What makes this store's vectors one model's features: model hash, pooling, normalisation, length."""
        return {k: self.config.get(k) for k in FEATURE_FIELDS}

    def key(self) -> str:
        """Content identity: the hash of its shards' checksums (for caches)."""
        import hashlib

        return hashlib.sha256("".join(s["sha256"] for s in self.manifest.shards).encode()).hexdigest()[:12]

    def verify(self) -> None:
        """StoreError naming the first shard that does not match the manifest (sha256, rows, shape, settings),
        or the first id that appears twice."""
        bad = StoreFormat(self.config, self.dim).first_problem(self.path, self.manifest)
        if bad:
            writer = WriterLock.holder(self.path)
            if writer:
                raise StoreError(f"{self.path}: is being written by pid {writer}; open it when that run ends")
            raise StoreError(f"{self.path / self.manifest['shards'][bad[0]]['file']}: {bad[1]}; the store is damaged: "
                             f"{REPAIR}")
        problem = entry_problem(self.path, self.manifest)
        if problem:
            raise StoreError(f"{self.path / ENTRY}: {problem}; the store is damaged: {REPAIR}")
        twice = first_repeat(self.id_digests(), self.ids_at)
        if twice is not None:
            (i, j), x = twice
            raise StoreError(f"{self.path}: id {x!r} is at rows {i} and {j}; a store's ids are unique "
                             f"(the store was altered): {REPAIR}")

    @property
    def ids(self) -> np.ndarray:
        """Every id as a str, in row order (n Python strings: for a store of millions of rows use `iter_ids`,
        `ids_at`, `ids_sha256` or `id_digests`, which never hold them all)."""
        if not hasattr(self, "_ids"):
            self._ids = self._column("id", None)
        return self._ids

    def iter_ids(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, the shard's ids as UTF-8 bytes) per shard: one shard's ids in memory at a time."""
        for s in self.manifest.shards:
            with open_h5(self.path / s["file"]) as f:
                yield s["row_start"], f["id"][:]

    def ids_at(self, rows) -> np.ndarray:
        """The ids (str) of the given rows, reading only the shards that hold them."""
        rows = np.asarray(rows, dtype=np.int64)
        if hasattr(self, "_ids"):
            return self._ids[rows]
        out = np.empty(len(rows), dtype=object)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        for s in self.manifest.shards:
            lo, hi = np.searchsorted(sorted_rows, [s["row_start"], s["row_end"]])
            if hi > lo:
                with open_h5(self.path / s["file"]) as f:
                    ids = f["id"].asstr()[:]
                out[order[lo:hi]] = ids[sorted_rows[lo:hi] - s["row_start"]]
        return out

    def ids_sha256(self) -> str:
        """sha256 of the ids in row order, one NUL after each (`analysis.knn.ids_sha256` of `ids`), streamed."""
        import hashlib

        h = hashlib.sha256()
        for _, chunk in self.iter_ids():
            if len(chunk):
                h.update(b"\0".join(chunk) + b"\0")
        return h.hexdigest()

    def id_digests(self) -> np.ndarray:
        """A 64-bit digest of every id (blake2b), row order: 8 bytes a row, for uniqueness and overlap checks
        at any size (equal digests are confirmed on the ids themselves)."""
        if not hasattr(self, "_id_digests"):
            self._id_digests = id_digests(chunk for _, chunk in self.iter_ids())
        return self._id_digests

    def _column(self, name: str, dtype) -> np.ndarray:

        parts = []
        for s in self.manifest.shards:
            with open_h5(self.path / s["file"]) as f:
                parts.append(f[name].asstr()[:] if name in ("id", "parent_id") else f[name][:])
        if not parts:
            return np.array([], dtype=dtype or object)
        out = np.concatenate(parts)
        return out if dtype is None else out.astype(dtype)

    @property
    def chunked(self) -> bool:
        return is_chunked(self.config)

    @property
    def parent_ids(self) -> np.ndarray:
        """Each row's record id: the row's own id unless the store is chunked."""
        return self._column("parent_id", None) if self.chunked else self.ids

    @property
    def chunks(self) -> np.ndarray:
        """Each row's window index within its record (0 for every row of a store that is not chunked)."""
        return self._column("chunk", np.int32) if self.chunked else np.zeros(len(self), np.int32)

    @property
    def n_tokens(self) -> np.ndarray:
        return self._column("n_tokens", np.int32)

    @property
    def truncated(self) -> np.ndarray:
        return self._column("truncated", bool)

    @property
    def precision(self) -> str:
        """float32, float16, int8, uint8, binary or ubinary (core.precision)."""
        return self.manifest.precision

    @property
    def vector_dim(self) -> int:
        """Dimensions of the vectors (a binary store's bytes hold 8 each)."""
        return int(self.config.get("bits", self.dim)) if self.precision in BITS else self.dim

    def iter_vectors(self, rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 vectors) blocks for similarity: float stores as stored, binary stores as the ±1
        vectors their bits stand for (cosine of those ranks by Hamming distance). int8/uint8 are refused."""
        refuse_quantised(self.config, self.path, "similarity")
        for start, block in self.iter_blocks(rows, raw=self.precision in BITS):
            yield start, signs(block, self.precision, self.vector_dim) if self.precision in BITS else block

    def vectors_between(self, lo: int, hi: int) -> np.ndarray:
        """float32 vectors of rows lo..hi (a binary store's ±1 vectors), reading only the shards that hold them
        (a Ray task's bank block)."""
        refuse_quantised(self.config, self.path, "similarity")
        parts = []
        for s in self.manifest.shards:
            a, b = max(lo, s["row_start"]), min(hi, s["row_end"])
            if a >= b:
                continue
            with open_h5(self.path / s["file"]) as f:
                part = f["embedding"][a - s["row_start"]:b - s["row_start"]]
            parts.append(signs(part, self.precision, self.vector_dim) if self.precision in BITS
                         else np.asarray(part, dtype=np.float32))
        return np.concatenate(parts) if parts else np.empty((0, self.vector_dim), np.float32)

    def iter_blocks(self, rows: int = 65536, dtype=np.float32, *, raw: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, embeddings[rows × dim]) blocks in store order; memory bounded by `rows`. A quantised
        store's codes come only with raw=True, as stored (cast to float they would pass for vectors)."""

        if rows <= 0:
            raise ValueError("rows must be positive")
        if not raw and self.precision not in FLOATS:
            raise StoreError(f"{self.path}: holds {self.precision} codes, not float vectors; read them with "
                             "raw=True (or iter_vectors for similarity)")
        if raw:
            dtype = None
        buf: list[np.ndarray] = []
        have = 0
        start = 0
        for s in self.manifest.shards:
            with open_h5(self.path / s["file"]) as f:
                ds = f["embedding"]
                for lo in range(0, s["rows"], rows):
                    hi = min(lo + rows, s["rows"])
                    part = ds[lo:hi] if dtype is None else np.asarray(ds[lo:hi], dtype=dtype)
                    buf.append(part)
                    have += len(part)
                    while have >= rows:
                        block = np.concatenate(buf) if len(buf) > 1 else buf[0]
                        yield start, block[:rows]
                        start += rows
                        rest = block[rows:]
                        buf, have = ([rest] if len(rest) else []), len(rest)
        if have:
            yield start, np.concatenate(buf) if len(buf) > 1 else buf[0]

    def embeddings(self, dtype=np.float32, *, raw: bool = False) -> np.ndarray:
        """All vectors in one array (use iter_blocks for stores larger than memory); raw=True: as stored."""
        if raw:
            dtype = stored_dtype(self.precision)
        out = np.empty((len(self), self.dim), dtype=dtype)
        for start, block in self.iter_blocks(dtype=dtype, raw=raw):
            out[start:start + len(block)] = block
        return out


def open_store(path: str | Path, *, allow_incomplete: bool = False, verify: bool = True) -> Store:
    """Open a store folder (or its manifest.json / embeddings.h5), checking every shard against the manifest.

    Args:
        path: the store folder, its manifest.json or its embeddings.h5.
        allow_incomplete: open a store whose run has not finished (its recorded shards).
        verify: check every shard's sha256, rows and settings, and that ids are unique (O(n) time, bounded
            memory: 8 bytes an id).

    Returns:
        The Store (its typed manifest, ids, blocks of vectors); StoreError naming the file when it does not verify.
    """
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not (p / MANIFEST).exists():
        raise StoreError(f"{p}: not an embedding store (no {MANIFEST}; make one with `lookalike embed`)")
    manifest = _read_manifest(p)
    if not manifest.complete and not allow_incomplete:
        writer = WriterLock.holder(p)
        if writer:
            raise StoreError(f"{p}: is being written by pid {writer} ({len(manifest.shards)} shards so far); "
                             "open it when that run ends")
        raise StoreError(f"{p}: store is incomplete ({len(manifest.shards)} shards written); "
                         "re-run the same `lookalike embed` command to finish it")
    store = Store(p, manifest)
    if verify:
        store.verify()
    return store


def remove_store(path: str | Path) -> bool:
    """Delete a store lookalike made at `path` (its shards, manifest, entry file and their temporaries; nothing
    else: a folder that holds other files keeps them). False when there is none. Refused while it is written."""
    p = Path(path)
    if not (p / MANIFEST).is_file():
        return False
    _read_manifest(p)  # a store's manifest, or StoreError
    with WriterLock(p):
        owned = StoreFormat({}, 0).owned
        mine = [f for f in p.iterdir() if owned.fullmatch(f.name) or owned_tmp(f.name, owned)]
        foreign = sorted(f.name for f in p.iterdir() if f not in mine and f.name != WriterLock.NAME)
        if foreign or any(f.is_symlink() or not f.is_file() for f in mine):
            bad = foreign or [f.name for f in mine if f.is_symlink() or not f.is_file()]
            raise StoreError(f"{p}: holds {', '.join(bad[:3])}, which is not part of a lookalike store; refusing to "
                             "remove the store (--overwrite deletes nothing unless all of it is lookalike's): move "
                             "it away and re-run")
        for f in mine:
            f.unlink()
    log.info("%s: removed the earlier store (--overwrite)", p)
    return True


def require_same_features(stores: dict[str, Store], what: str) -> None:
    """StoreError unless every store holds the same model's features (model hash, pooling, normalisation,
    max length): `what` mixes them into one computation."""
    items = list(stores.items())
    first_role, first = items[0]
    for role, s in items[1:]:
        d = features(first.config).difference(features(s.config))
        if d is not None:
            raise StoreError(f"{what}: the {role} store ({s.path}) and the {first_role} store ({first.path}) "
                             f"differ in {d.field} ({d.second!r} vs {d.first!r}); {what} needs one model's features "
                             "throughout")


def id_positions(a, b) -> tuple[np.ndarray | None, str]:
    """(positions in `b` of `a`'s ids, in a's order; "") when both hold the same ids, else (None, what differs).
    The one id matching every comparison uses (stores, neighbour files, OOD sets)."""
    pos_b = {x: i for i, x in enumerate(b)}
    missing = [x for x in a if x not in pos_b]
    extra = len(b) - (len(a) - len(missing))
    if missing or extra:
        example = missing[:3] if missing else [x for x in b if x not in set(a)][:3]
        return None, f"{len(missing)} ids only in the first, {extra} only in the second; e.g. {example}"
    return np.fromiter((pos_b[x] for x in a), dtype=np.int64, count=len(a)), ""


def align(a: Store, b: Store) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (ia, ib) with a.ids[ia] == b.ids[ib], in a's order. StoreError if the id sets differ."""
    ib, why = id_positions(a.ids, b.ids)
    if ib is None:
        raise StoreError(f"stores {a.path} and {b.path} hold different id sets ({why})")
    return np.arange(len(ib)), ib
