"""A full disk is one line naming the file, exit 2, and nothing is left behind: no `.tmp`, no partial file. Each
writing command runs for real onto a file system that is full (a 256 KiB tmpfs, mounted by the test as root,
filled up but for a few kilobytes)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from hostile_tools import run_cli


@pytest.fixture
def full_disk(tmp_path):
    mnt = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.fail(f"this test mounts a small tmpfs and needs root: {r.stderr.decode().strip()}")
    try:
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as fh:  # fill it, then give back a little: small files still fit, outputs do not
            try:
                while True:
                    fh.write(b"\0" * 4096)

            except OSError:
                pass
        os.truncate(filler, max(0, filler.stat().st_size - 12 * 1024))
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _no_leftovers(folder: Path, keep=("filler",)):
    left = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.name not in keep and p.is_file()
            and (p.name.endswith(".tmp") or ".tmp" in p.name or p.stat().st_size == 0)]
    assert not left, left


def _one_line_naming(r, folder: Path):
    assert r.rc == 2, (r.rc, r.err)
    lines = r.err.strip().splitlines()
    assert "Traceback" not in r.err and len(lines) == 1, r.err
    assert str(folder) in lines[0] and ("no space" in lines[0].lower() or "free" in lines[0]), lines[0]


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_export_store_onto_a_full_disk(full_disk, tmp_path, fmt, tiny_exports, shared_data):
    from lookalike.engine import embed
    from lookalike.params import EmbedParams

    store = tmp_path / "store"
    embed(tiny_exports["bert4"], shared_data / "imdb" / "imdb_1k.tsv", store,
          EmbedParams(max_length=16, shard_rows=500))  # 1,000 × 64 float32: 256 KB, more than is free
    r = run_cli("export-store", store, full_disk / "out", "--format", fmt)
    assert r.rc not in (135, -7), "died of SIGBUS (a write through a memory map)"
    _one_line_naming(r, full_disk / "out")
    _no_leftovers(full_disk)


def test_embed_knn_and_agree_onto_a_full_disk(full_disk, small_store, small_knn, tiny_exports, shared_data):
    r = run_cli("embed", tiny_exports["bert4"], shared_data / "imdb" / "imdb_1k.tsv", full_disk / "store",
                "--max-length", "16", "--shard-rows", "1000")
    _one_line_naming(r, full_disk / "store")
    _no_leftovers(full_disk)
    r = run_cli("predict", tiny_exports["cls"], shared_data / "imdb" / "imdb_1k.tsv", full_disk / "pred",
                "--task", "cls", "--max-length", "16")
    _one_line_naming(r, full_disk / "pred")
    _no_leftovers(full_disk)
