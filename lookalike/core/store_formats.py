"""A store's vectors in the formats vector databases and dataframes read: .npy or Parquet, streamed shard by shard.

    npy       OUT/embeddings.npy (rows × columns, the stored dtype), OUT/ids.jsonl (one JSON string per row, in
              row order; a chunked store's lines are [id, parent_id, chunk])
    parquet   OUT/embeddings.parquet: columns id, embedding (fixed-size list of the stored dtype), n_tokens,
              truncated (and parent_id, chunk for a chunked store); the store's config as schema metadata.
              Parquet has no fixed-size list of its own, so DuckDB reads `embedding` as FLOAT[]: cast it,
              `embedding::FLOAT[384]`, for its array functions (export.json says the cast for this store).

with_text: the source text beside each row (parquet: columns text and, for pairs, text_pair; npy: texts.jsonl),
read again from the corpus the store was made from, which must still be the content it was (its fingerprint) and
give the same ids in the same order; a chunked store's rows carry their record's whole text.

Both come with OUT/export.json: the store's path, content key, config and row count. The store stays the source of
truth: what is written is verified against it first (every shard's sha256), read one shard at a time (memory
bounded by a shard), and the names are claimed through the output ledger, so no user file is replaced.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import jsonl_line as _jsonl
from ..files import require_space
from ..outputs import OwnedFolder
from .shards import open_h5
from .store import Store, open_store

FORMATS = ("npy", "parquet")


def _shards(store: Store):
    """(shard file handle) for each shard in row order."""
    for s in store.manifest.shards:
        with open_h5(store.path / s["file"]) as f:
            yield f


def export_store(store_path: str | Path, out: str | Path, fmt: str = "npy", *, texts=None) -> dict:
    """Write the store at `store_path` to the folder `out` as `fmt` (npy or parquet); return what was written.
    texts: a function giving, for the opened store, each row's (text, text_pair) in row order (`jobs.source_texts`:
    `--with-text`); written beside the vectors (see the module's notes)."""
    with_text = texts is not None
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})", field="format")
    store = open_store(store_path)
    folder = OwnedFolder(out)
    names = ["embeddings.npy", "ids.jsonl"] if fmt == "npy" else ["embeddings.parquet"]
    if with_text and fmt == "npy":
        names.append("texts.jsonl")
    texts = texts(store) if with_text else None
    folder.claim(*names, "export.json")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise InputError("--format parquet needs pyarrow (pip install pyarrow)", field="format") from exc
    Path(out).mkdir(parents=True, exist_ok=True)
    (_npy if fmt == "npy" else _parquet)(store, folder, texts)
    info = {"store": str(store.path), "store_key": store.key(), "format": fmt, "rows": len(store),
            "columns": store.dim, "dtype": store.precision, "chunked": store.chunked, "files": names,
            "with_text": with_text, "config": store.config}
    if fmt == "parquet":
        value = {"float32": "FLOAT", "float16": "FLOAT", "int8": "TINYINT", "uint8": "UTINYINT",
                 "binary": "TINYINT", "ubinary": "UTINYINT"}[store.precision]
        info["duckdb"] = (f"SELECT id, embedding::{value}[{store.dim}] AS embedding FROM "
                          f"'{Path(out) / 'embeddings.parquet'}'")
        info["duckdb_why"] = ("Parquet stores a fixed-size list as a list, which DuckDB reads as "
                              f"{value}[]; its array functions (array_cosine_similarity) need {value}[{store.dim}]")
    folder.write_json("export.json", info)
    return {k: v for k, v in info.items() if k != "config"} | {"out": str(out)}


def _npy(store: Store, folder: OwnedFolder, texts=None) -> None:
    """embeddings.npy written as a stream (the .npy header, then each shard's rows), never through a memory map:
    a full disk is then an ordinary write error naming the file (through a map it is a SIGBUS), and the free space
    the array needs is checked before its first byte."""
    from numpy.lib import format as npy_format

    from .precision import stored_dtype

    dtype = stored_dtype(store.precision)
    header = {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": (len(store), store.dim)}
    require_space(folder.folder / "embeddings.npy", len(store) * store.dim * dtype.itemsize + 4096)
    with folder.writing("embeddings.npy") as tmp, open(tmp, "wb") as out:
        npy_format.write_array_header_1_0(out, header)
        for f in _shards(store):
            out.write(np.ascontiguousarray(f["embedding"][:], dtype=dtype).tobytes())
    if texts is not None:
        with folder.writing("texts.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as out:
            for text, pair in texts:
                out.write(_jsonl(text if pair is None else [text, pair]))
    with folder.writing("ids.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as out:
        for f in _shards(store):
            ids = f["id"].asstr()[:]
            if store.chunked:
                for x, p, c in zip(ids, f["parent_id"].asstr()[:], f["chunk"][:]):
                    out.write(_jsonl([x, p, int(c)]))
            else:
                for x in ids:
                    out.write(_jsonl(x))


def _parquet(store: Store, folder: OwnedFolder, texts=None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .precision import stored_dtype

    value = pa.from_numpy_dtype(stored_dtype(store.precision))
    fields = [pa.field("id", pa.string()), pa.field("embedding", pa.list_(value, store.dim)),
              pa.field("n_tokens", pa.int32()), pa.field("truncated", pa.bool_())]
    if store.chunked:
        fields += [pa.field("parent_id", pa.string()), pa.field("chunk", pa.int32())]
    pairs = bool(store.config.get("pair_field"))
    if texts is not None:
        fields += [pa.field("text", pa.string())] + ([pa.field("text_pair", pa.string())] if pairs else [])
    meta = {b"lookalike.store": json.dumps({"store": str(store.path), "key": store.key(),
                                             "config": store.config}).encode()}
    schema = pa.schema(fields, metadata=meta)
    with folder.writing("embeddings.parquet") as tmp:
        with pq.ParquetWriter(str(tmp), schema) as writer:
            for f in _shards(store):
                emb = np.ascontiguousarray(f["embedding"][:])
                cols = [pa.array(f["id"].asstr()[:].tolist(), pa.string()),
                        pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), value), store.dim),
                        pa.array(f["n_tokens"][:], pa.int32()), pa.array(f["truncated"][:], pa.bool_())]
                if store.chunked:
                    cols += [pa.array(f["parent_id"].asstr()[:].tolist(), pa.string()),
                             pa.array(f["chunk"][:], pa.int32())]
                if texts is not None:
                    rows = [next(texts) for _ in range(len(emb))]
                    cols.append(pa.array([t for t, _ in rows], pa.string()))
                    if pairs:
                        cols.append(pa.array([p for _, p in rows], pa.string()))
                writer.write_table(pa.Table.from_arrays(cols, schema=schema))
