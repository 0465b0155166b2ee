"""Crash-safe ownership: a file is recorded as lookalike's before it takes its final name (record intent, rename,
confirm), so a SIGKILL at any step boundary leaves a folder the re-run resumes or redoes, never one it refuses as
"not written by lookalike"; and output names are held for the whole run (nothing that appears there meanwhile is
replaced, a symbolic link included).

The kills are deterministic: LOOKALIKE_TEST_CRASH_AT names the boundary where the command SIGKILLs itself."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from hostile_tools import run_cli

from lookalike.files import CRASH_ENV

BOUNDARIES = ("intended", "placed")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _commands(small_store, small_knn, tiny_exports, shared_data, out: Path):
    yield "agree", ("agree", "--knn", f"a={small_knn}", "--knn", f"b={small_knn}", "--k", "2", "--reps", "20",
                    "-o", out / "table"), out
    yield "export-store", ("export-store", small_store, out / "npy"), out / "npy"
    yield "predict", ("predict", tiny_exports["cls"], shared_data / "imdb" / "imdb_1k.tsv", out / "pred", "--task",
                      "cls", "--limit", "12", "--max-length", "32"), out / "pred"


@pytest.fixture(scope="module")
def clean(small_store, small_knn, tiny_exports, shared_data, tmp_path_factory) -> dict[str, tuple]:
    """Each command run once, uninterrupted: what every killed-and-resumed run must end like."""
    runs = {name: (args, folder) for name, args, folder in
            _commands(small_store, small_knn, tiny_exports, shared_data, tmp_path_factory.mktemp("clean"))}
    for name, (args, folder) in runs.items():
        r = run_cli(*args)
        assert r.rc == 0, (name, r.err)
    return runs


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_a_kill_at_every_boundary_is_resumed_not_refused(clean, small_store, small_knn, tiny_exports, shared_data,
                                                         tmp_path, boundary):
    for name, args, folder in _commands(small_store, small_knn, tiny_exports, shared_data, tmp_path / "killed"):
        killed = run_cli(*args, env={CRASH_ENV: boundary})
        assert killed.rc == -signal.SIGKILL, (name, boundary, killed.rc, killed.err)
        again = run_cli(*args)
        assert again.rc == 0, (name, boundary, again.err)
        want, got = _files(clean[name][1]), _files(folder)
        assert set(got) == set(want), (name, boundary, sorted(got), sorted(want))
        assert not [n for n in os.listdir(folder) if n.endswith(".tmp")], (name, boundary)
        for f in want:  # results equal an uninterrupted run's (timings and paths aside)
            if f.endswith((".npy", ".jsonl", ".md", ".csv")) and name != "predict":
                assert got[f] == want[f], (name, boundary, f)
        ledger = json.loads((folder / ".lookalike-files.json").read_text())["files"]
        assert not [n for n, e in ledger.items() if e.get("was") is not None], ledger  # every intent confirmed


def test_a_file_that_appears_at_a_shard_name_mid_run_is_refused_not_replaced(tiny_exports, corpus_file, tmp_path,
                                                                               monkeypatch):
    """`embed` holds its shard names for the whole run: a user's file, or a symlink, that appears at the name of a
    shard not yet written is left as it is and the run stops with one line naming it."""
    from lookalike.core import store as store_mod
    from lookalike.engine import embed
    from lookalike.errors import LookalikeError
    from lookalike.params import EmbedParams

    for kind in ("file", "symlink"):
        out = tmp_path / f"store-{kind}"
        target = tmp_path / f"target-{kind}"
        target.write_text("the user's\n")
        real = store_mod.write_shard_file

        def planting(out_dir, index, *a, **kw):
            if index == 1:  # between shard 0 and shard 1, someone puts something at shard 1's name
                name = Path(out_dir) / store_mod.StoreFormat.shard_name(1)
                if kind == "file":
                    name.write_text("a user's file\n")
                else:
                    name.symlink_to(target)
            return real(out_dir, index, *a, **kw)

        monkeypatch.setattr(store_mod, "write_shard_file", planting)
        with pytest.raises(LookalikeError, match="appeared at this output name"):
            embed(tiny_exports["bert2"], corpus_file, out, EmbedParams(max_length=32, shard_rows=10))
        shard1 = out / store_mod.StoreFormat.shard_name(1)
        assert target.read_text() == "the user's\n"
        if kind == "file":
            assert shard1.read_text() == "a user's file\n"
        else:
            assert shard1.is_symlink() and os.readlink(shard1) == str(target)
        monkeypatch.setattr(store_mod, "write_shard_file", real)


def test_place_takes_a_free_name_and_replaces_only_its_own(tmp_path):
    from lookalike.errors import LookalikeError
    from lookalike.files import atomic_file

    final = tmp_path / "out.txt"
    with atomic_file(final) as tmp:
        tmp.write_text("one")
    assert final.read_text() == "one"
    with pytest.raises(LookalikeError, match="appeared"):  # occupied, and nobody said it is ours
        with atomic_file(final) as tmp:
            tmp.write_text("two")
    assert final.read_text() == "one" and not list(tmp_path.glob("*.tmp"))
    with atomic_file(final, ours=lambda p: p.read_text() == "one") as tmp:
        tmp.write_text("two")
    assert final.read_text() == "two"
    link = tmp_path / "link"
    link.symlink_to(final)
    with pytest.raises(LookalikeError, match="symbolic link"):
        with atomic_file(link, ours=lambda p: True) as tmp:
            tmp.write_text("three")
    assert final.read_text() == "two" and link.is_symlink()
