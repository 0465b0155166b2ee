"""HDF5 embedding stores: sharded, checksummed, resumable; one virtual entry point for HDF5 tools.

Layout of a store folder:
    part-00000.h5 ...   datasets `embedding` (rows × dim), `id` (UTF-8), `n_tokens` (int32), `truncated` (bool),
                        attributes: model_sha256, pooling, max_length, dtype, normalize, row_start, row_end
    manifest.json       config, dim, shards [{file, row_start, row_end, rows, sha256}], complete, totals
    embeddings.h5       (when complete) virtual datasets `embedding`, `n_tokens`, `truncated` over all shards,
                        plus a real `id` dataset: any HDF5 tool sees one array

Every file is written under a temporary name, fsynced and renamed; the manifest is replaced atomically after
the shard it lists, so a crash leaves either the old state or the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import StoreError

log = logging.getLogger(__name__)

STORE_FORMAT = 1
MANIFEST = "manifest.json"
ENTRY = "embeddings.h5"


def shard_name(index: int) -> str:
    return f"part-{index:05d}.h5"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def atomic_write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - not every filesystem allows it
        pass


def write_shard_file(out_dir: Path, index: int, start: int, ids: list[str], embedding: np.ndarray,
                     n_tokens: np.ndarray, truncated: np.ndarray, config: dict) -> dict:
    """Write shard `index` (rows start..start+len) under a temporary name, fsync, rename; return its manifest entry.

    Safe to call from any process (Ray workers write their own shards); the manifest is the caller's job.
    """
    import h5py

    out_dir = Path(out_dir)
    end = start + len(ids)
    name = shard_name(index)
    final = out_dir / name
    tmp = out_dir / f"{name}.{os.getpid()}.tmp"
    with h5py.File(tmp, "w") as f:
        f.create_dataset("embedding", data=embedding)
        f.create_dataset("id", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("n_tokens", data=np.asarray(n_tokens).astype(np.int32))
        f.create_dataset("truncated", data=np.asarray(truncated).astype(bool))
        for k, v in config.items():
            if isinstance(v, (str, int, float, bool)):
                f.attrs[k] = v
        f.attrs["row_start"] = start
        f.attrs["row_end"] = end
        f.attrs["format_version"] = STORE_FORMAT
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(out_dir)
    return {"file": name, "row_start": start, "row_end": end, "rows": len(ids), "sha256": _sha256(final),
            "n_truncated": int(np.asarray(truncated).sum())}


class StoreWriter:
    """Writes shards in row order and keeps the manifest current. Resumes an interrupted store."""

    def __init__(self, out_dir: str | Path, config: dict, dim: int):
        self.dir = Path(out_dir)
        self.config = config
        self.dim = dim
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest = self._load_or_create()

    # ---- resume
    def _load_or_create(self) -> dict:
        mpath = self.dir / MANIFEST
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()
        if not mpath.exists():
            if any(self.dir.glob("part-*.h5")):
                raise StoreError(f"{self.dir}: holds shards but no {MANIFEST}; not a lookalike store, refusing "
                                 "to write into it")
            manifest = {"format_version": STORE_FORMAT, "config": self.config, "dim": self.dim, "shards": [],
                        "complete": False, "total_rows": None, "n_truncated": 0,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            atomic_write_json(mpath, manifest)
            return manifest
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError:
            raise StoreError(f"{mpath}: corrupt manifest (invalid JSON); delete the folder to start over") from None
        old = manifest.get("config", {})
        diffs = [k for k in sorted(set(old) | set(self.config)) if old.get(k) != self.config.get(k)]
        if diffs:
            k = diffs[0]
            raise StoreError(f"{self.dir}: holds a store made with other settings ({k}: {old.get(k)!r} there, "
                             f"{self.config.get(k)!r} now); use another OUT_DIR or delete it")
        good = []
        for shard in manifest["shards"]:
            path = self.dir / shard["file"]
            if not path.exists():
                log.warning("%s: shard listed in the manifest is missing; re-doing it", path)
                break
            if _sha256(path) != shard["sha256"]:
                log.warning("%s: corrupt shard (checksum mismatch); re-doing it and everything after it", path)
                break
            good.append(shard)
        if len(good) != len(manifest["shards"]):
            manifest["shards"] = good
            manifest["complete"] = False
            atomic_write_json(mpath, manifest)
        listed = {s["file"] for s in good}
        for stray in self.dir.glob("part-*.h5"):
            if stray.name not in listed:  # written before a crash, never recorded: redo it
                stray.unlink()
        manifest["n_truncated"] = sum(s.get("n_truncated", 0) for s in good)
        return manifest

    @property
    def rows_done(self) -> int:
        shards = self.manifest["shards"]
        return shards[-1]["row_end"] if shards else 0

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    # ---- writing
    def write_shard(self, ids: list[str], embedding: np.ndarray, n_tokens: np.ndarray, truncated: np.ndarray) -> None:
        entry = write_shard_file(self.dir, len(self.manifest["shards"]), self.rows_done, ids, embedding, n_tokens,
                                 truncated, self.config)
        self.record_shard(entry)

    def record_shard(self, entry: dict) -> None:
        """Append a written shard (the next one in row order) to the manifest, atomically."""
        if entry["row_start"] != self.rows_done or entry["file"] != shard_name(len(self.manifest["shards"])):
            raise StoreError(f"{self.dir}: shard {entry['file']} (rows {entry['row_start']}..) is not the next one")
        self.manifest["shards"].append(entry)
        self.manifest["n_truncated"] = self.manifest.get("n_truncated", 0) + entry.get("n_truncated", 0)
        atomic_write_json(self.dir / MANIFEST, self.manifest)

    def finalize(self) -> dict:
        """Mark the store complete and write the single HDF5 entry point (virtual datasets)."""
        import h5py

        shards = self.manifest["shards"]
        total = self.rows_done
        dtype = np.dtype(self.config.get("dtype", "float32"))
        tmp = self.dir / (ENTRY + ".tmp")
        with h5py.File(tmp, "w") as f:
            for name, dt, shape in (("embedding", dtype, (total, self.dim)), ("n_tokens", np.int32, (total,)),
                                    ("truncated", bool, (total,))):
                layout = h5py.VirtualLayout(shape=shape, dtype=dt)
                for s in shards:
                    src_shape = (s["rows"], self.dim) if name == "embedding" else (s["rows"],)
                    layout[s["row_start"]:s["row_end"]] = h5py.VirtualSource(s["file"], name, shape=src_shape)
                f.create_virtual_dataset(name, layout)
            ids = []
            for s in shards:
                with h5py.File(self.dir / s["file"], "r") as sf:
                    ids.extend(sf["id"].asstr()[:])
            f.create_dataset("id", data=np.array(ids, dtype=object), dtype=h5py.string_dtype("utf-8"))
            for k, v in self.config.items():
                if isinstance(v, (str, int, float, bool)):
                    f.attrs[k] = v
        os.replace(tmp, self.dir / ENTRY)
        self.manifest.update(complete=True, total_rows=total,
                             finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        atomic_write_json(self.dir / MANIFEST, self.manifest)
        return self.manifest


@dataclass
class Store:
    """Read side of a store: lengths, ids and blockwise iteration without loading everything."""

    path: Path
    manifest: dict

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def __len__(self) -> int:
        return self.manifest["shards"][-1]["row_end"] if self.manifest["shards"] else 0

    @property
    def ids(self) -> np.ndarray:
        if not hasattr(self, "_ids"):
            import h5py

            parts = []
            for s in self.manifest["shards"]:
                with h5py.File(self.path / s["file"], "r") as f:
                    parts.append(f["id"].asstr()[:])
            self._ids = np.concatenate(parts) if parts else np.array([], dtype=object)
        return self._ids

    def _column(self, name: str, dtype) -> np.ndarray:
        import h5py

        parts = []
        for s in self.manifest["shards"]:
            with h5py.File(self.path / s["file"], "r") as f:
                parts.append(f[name][:])
        return np.concatenate(parts).astype(dtype) if parts else np.array([], dtype=dtype)

    @property
    def n_tokens(self) -> np.ndarray:
        return self._column("n_tokens", np.int32)

    @property
    def truncated(self) -> np.ndarray:
        return self._column("truncated", bool)

    def iter_blocks(self, rows: int = 65536, dtype=np.float32) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, embeddings[rows × dim]) blocks in store order; memory bounded by `rows`."""
        import h5py

        if rows <= 0:
            raise ValueError("rows must be positive")
        buf: list[np.ndarray] = []
        have = 0
        start = 0
        for s in self.manifest["shards"]:
            with h5py.File(self.path / s["file"], "r") as f:
                ds = f["embedding"]
                for lo in range(0, s["rows"], rows):
                    hi = min(lo + rows, s["rows"])
                    part = np.asarray(ds[lo:hi], dtype=dtype)
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

    def embeddings(self, dtype=np.float32) -> np.ndarray:
        """All vectors in one array (use iter_blocks for stores larger than memory)."""
        out = np.empty((len(self), self.dim), dtype=dtype)
        for start, block in self.iter_blocks(dtype=dtype):
            out[start:start + len(block)] = block
        return out


def open_store(path: str | Path, *, allow_incomplete: bool = False) -> Store:
    """Open a store folder (or its manifest.json / embeddings.h5)."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    mpath = p / MANIFEST
    if not mpath.exists():
        raise StoreError(f"{p}: not an embedding store (no {MANIFEST}; make one with `lookalike embed`)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{mpath}: invalid JSON at line {exc.lineno}") from None
    if not manifest.get("complete") and not allow_incomplete:
        raise StoreError(f"{p}: store is incomplete ({len(manifest.get('shards', []))} shards written); "
                         "re-run the same `lookalike embed` command to finish it")
    for s in manifest.get("shards", []):
        if not (p / s["file"]).exists():
            raise StoreError(f"{p}: shard {s['file']} listed in the manifest is missing")
    return Store(p, manifest)


def align(a: Store, b: Store) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (ia, ib) with a.ids[ia] == b.ids[ib], in a's order. StoreError if the id sets differ."""
    ida, idb = a.ids, b.ids
    pos_b = {x: i for i, x in enumerate(idb)}
    missing = [x for x in ida if x not in pos_b]
    extra = len(idb) - (len(ida) - len(missing))
    if missing or extra:
        example = missing[:3] if missing else [x for x in idb if x not in set(ida)][:3]
        raise StoreError(f"stores {a.path} and {b.path} hold different id sets ({len(missing)} ids only in the "
                         f"first, {extra} only in the second; e.g. {example})")
    ia = np.arange(len(ida))
    ib = np.fromiter((pos_b[x] for x in ida), dtype=np.int64, count=len(ida))
    return ia, ib
