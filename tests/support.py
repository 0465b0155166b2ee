"""Helpers that more than one test tier uses (tests/ is on sys.path through its conftest: `from support import`)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from click.testing import CliRunner

from lookalike.cli import cli


def _ort(path):
    return ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])


def _feeds(sess, enc):
    names = {i.name for i in sess.get_inputs()}
    return {k: v.numpy().astype(np.int64) for k, v in enc.items() if k in names}


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(r, *needles):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def recorded(folder):
    """A store's or token cache's manifest as readers see it: manifest.json with the journal of shards recorded
    since it was written (appending a shard writes one journal line, not the whole manifest)."""
    import json
    from pathlib import Path

    from lookalike.core.shards import read_manifest
    from lookalike.core.store import StoreFormat
    from lookalike.engine.tokens import TokenFormat

    kind = json.loads((Path(folder) / "manifest.json").read_text()).get("kind", StoreFormat.kind)
    return read_manifest(Path(folder), TokenFormat if kind == TokenFormat.kind else StoreFormat)


def block_spy(array, seen: list):
    """Vectors over `array` that record the length of every block they are read in (a streamed bank's)."""
    from lookalike.analysis.vectors import Vectors

    class Spy(Vectors):
        def blocks(self, rows=65536):
            for lo, b in super().blocks(rows):
                seen.append(len(b))
                yield lo, b

    return Spy(array=array)


def make_store(path, x, ids=None, shard_rows: int = 16, precision: str = "float32", **config):
    """A small store of `x` written by StoreWriter (embed's writer), opened and verified."""
    import numpy as np

    from lookalike.core.store import StoreWriter, open_store

    ids = [f"p{i}" for i in range(len(x))] if ids is None else list(ids)
    cfg = {"model_sha256": "m" * 64, "pooling": "cls", "normalize": False, "max_length": 16, "dtype": precision,
           **config}
    with StoreWriter(path, cfg, x.shape[1], shard_rows) as w:
        w.append(ids, x, np.full(len(x), 3), np.zeros(len(x), bool))
        w.finalize()
    return open_store(path)


class PanicException(BaseException):
    """The name PyO3 gives a Rust panic (a BaseException): what lookalike must name by record."""


def panicking_encode(batching, needle: str, message: str):
    """batching._encode, but a Rust panic (simulated) whenever an input holds `needle`."""
    real = batching._encode

    def encode(backend, inputs, with_types):
        if any(needle in (x if isinstance(x, str) else x[0]) for x in inputs):
            raise PanicException(message)
        return real(backend, inputs, with_types)
    return encode
