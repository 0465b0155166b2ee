"""The sharded writer under every store and token cache, on a toy format (JSON in shard-named files): shards cut
at fixed row boundaries whatever the append sizes, the manifest one contiguous chain, resume from the last good
shard, foreign files refused; RowBuffer and chain_problem against hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookalike.core import shards as shards_mod
from lookalike.core.shards import JOURNAL, MANIFEST, RowBuffer, ShardedWriter, ShardFormat, chain_problem, read_manifest, sha_problem
from lookalike.errors import StoreError
from lookalike.files import sha256_file


class Toy(ShardFormat):
    kind = "lookalike.toy"
    noun = "toy folder"
    prefix = "toy"

    def write_shard(self, folder, index, start, columns):
        name = self.shard_name(index)
        (folder / name).write_text(json.dumps({"id": list(columns["id"]), "x": np.asarray(columns["x"]).tolist()}))
        rows = len(columns["id"])
        return {"file": name, "row_start": start, "row_end": start + rows, "rows": rows,
                "sha256": sha256_file(folder / name)}

    def check_shard(self, folder, entry, manifest):
        return sha_problem(folder, entry)


def _rows(folder):
    m = read_manifest(folder, Toy)  # the manifest with the journal of shards recorded since it was written
    ids, xs = [], []
    for s in m["shards"]:
        part = json.loads((folder / s["file"]).read_text())
        ids += part["id"]
        xs += part["x"]
    return m, ids, xs


def _write(folder, sizes, shard_rows, start=0, finalize=True):
    with ShardedWriter(folder, Toy({"v": 1}), shard_rows) as w:
        row = w.rows_done
        assert row == start
        for n in sizes:
            w.append_columns({"id": [f"r{i}" for i in range(row, row + n)], "x": np.arange(row, row + n)})
            row += n
        return w.finalize() if finalize else None


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12), shard_rows=st.integers(1, 25))
def test_shards_cut_at_fixed_boundaries_whatever_the_appends(tmp_path_factory, sizes, shard_rows):
    folder = tmp_path_factory.mktemp("toy")
    counts = _write(folder / "s", sizes, shard_rows)
    m, ids, xs = _rows(folder / "s")
    total = sum(sizes)
    assert counts == {"rows": total, "shards": -(-total // shard_rows), "n_truncated": 0}
    assert ids == [f"r{i}" for i in range(total)] and xs == list(range(total))
    assert [s["row_start"] for s in m["shards"]] == list(range(0, total, shard_rows))
    assert chain_problem(m, Toy) is None and m["complete"] and m["total_rows"] == total


def test_resume_continues_from_the_last_good_shard(tmp_path):
    _write(tmp_path / "s", [7, 6], 5, finalize=False)  # a crash: two whole shards recorded, three rows lost
    m, ids, _ = _rows(tmp_path / "s")
    assert len(m["shards"]) == 2 and not m["complete"] and ids == [f"r{i}" for i in range(10)]
    _write(tmp_path / "s", [4, 9], 5, start=10)
    m, ids, xs = _rows(tmp_path / "s")
    assert ids == [f"r{i}" for i in range(23)] and xs == list(range(23)) and m["complete"]
    # a shard edited after it was written is redone on resume, with every shard after it
    bad = tmp_path / "t"
    _write(bad, [12], 4, finalize=False)
    (bad / "toy-00001.h5").write_text("{}")
    with ShardedWriter(bad, Toy({"v": 1}), 4) as w:
        assert w.rows_done == 4 and not (bad / "toy-00002.h5").exists()


def test_the_writer_refuses_foreign_files_other_settings_and_leaves_no_stub(tmp_path):
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a lookalike toy folder"):
        _write(tmp_path / "users", [3], 2)
    assert (tmp_path / "users" / "notes.txt").read_text() == "mine"
    _write(tmp_path / "s", [3], 2, finalize=False)
    with pytest.raises(StoreError, match="made with other settings"):
        with ShardedWriter(tmp_path / "s", Toy({"v": 2}), 2):
            pass
    with pytest.raises(StoreError, match="no rows"):
        with ShardedWriter(tmp_path / "empty", Toy({"v": 1}), 2) as w:
            w.finalize()
    assert not (tmp_path / "empty").exists()  # a folder this run created and recorded nothing in is removed
    with pytest.raises(StoreError, match="append of 2 ids with x of length 3"):
        with ShardedWriter(tmp_path / "u", Toy({"v": 1}), 2) as w:
            w.append_columns({"id": ["a", "b"], "x": np.arange(3)})


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=8), data=st.data())
def test_row_buffer_gives_back_exactly_what_was_added(sizes, data):
    buf, row = RowBuffer(), 0
    for n in sizes:
        buf.add({"id": [f"r{i}" for i in range(row, row + n)], "x": np.arange(row, row + n), "none": None})
        row += n
    got_ids, got_x = [], []
    while buf.rows:
        part = buf.take(data.draw(st.integers(1, buf.rows)))
        assert part["none"] is None and len(part["id"]) == len(part["x"])
        got_ids += part["id"]
        got_x += part["x"].tolist()
    assert got_ids == [f"r{i}" for i in range(row)] and got_x == list(range(row))


def _entry(i, start, n, **over):
    return {"file": f"toy-{i:05d}.h5", "row_start": start, "row_end": start + n, "rows": n, "sha256": "0", **over}


@pytest.mark.parametrize("shards,complete,needle", [
    ([_entry(0, 0, 5), _entry(1, 5, 5)], 10, None),
    ([_entry(1, 0, 5)], None, "names 'toy-00001.h5', expected toy-00000.h5"),
    ([_entry(0, 0, 5), _entry(1, 6, 5)], None, "starts at row 6, the chain is at row 5"),
    ([_entry(0, 0, 5, row_end=9)], None, "covers rows 0..9 but says 5 rows"),
    ([_entry(0, 0, 0)], None, "covers rows 0..0 but says 0 rows"),
    ([_entry(0, 0, 5, rows=True)], None, "has no int 'rows'"),
    ([_entry(0, 0, 5, file=None)], None, "has no str 'file'"),
    (["toy-00000.h5"], None, "is not an object"),
    ([_entry(0, 0, 5)], 7, "total_rows is 7, the shards hold 5"),
])
def test_chain_problem_names_the_first_break(shards, complete, needle):
    m = {"shards": shards, "complete": complete is not None, "total_rows": complete}
    problem = chain_problem(m, Toy)
    assert problem is None if needle is None else needle in problem, problem


def test_appending_a_shard_is_constant_work_whatever_the_count(tmp_path, monkeypatch):
    """The manifest is rewritten only when the journal grows as long as its list: O(log n) rewrites for n shards,
    so each append costs O(1) amortised (it was a whole rewrite per shard: O(n^2) in all)."""
    folds = []
    real = shards_mod.write_manifest
    monkeypatch.setattr(shards_mod, "write_manifest", lambda *a: folds.append(len(a[1]["shards"])) or real(*a))
    n = 3000
    with ShardedWriter(tmp_path / "s", Toy({"v": 1}), 1) as w:
        for i in range(n):
            w.append_columns({"id": [f"r{i}"], "x": np.array([i])})
            if i == n // 2:
                m = read_manifest(tmp_path / "s", Toy)  # mid-run, a reader sees every recorded shard
                assert len(m["shards"]) == i + 1 and (tmp_path / "s" / JOURNAL).exists()
        w.finalize()
    rewritten = sum(folds)  # entries written out over the whole run
    assert len(folds) <= 2 * np.log2(n) + 3 and rewritten <= 4 * n, (len(folds), rewritten)
    m, ids, _ = _rows(tmp_path / "s")
    assert ids == [f"r{i}" for i in range(n)] and m["complete"] and not (tmp_path / "s" / JOURNAL).exists()


def _crashed_with_journal(folder):
    with ShardedWriter(folder, Toy({"v": 1}), 2) as w:
        for i in range(0, 140, 2):
            w.append_columns({"id": [f"r{i}", f"r{i + 1}"], "x": np.array([i, i + 1])})
    assert (folder / JOURNAL).exists()
    return read_manifest(folder, Toy)


def test_a_torn_last_journal_line_is_a_shard_never_recorded(tmp_path):
    m = _crashed_with_journal(tmp_path / "s")
    n = len(m["shards"])
    j = tmp_path / "s" / JOURNAL
    j.write_bytes(j.read_bytes()[:-25])  # the kill came while the last line was written
    assert len(read_manifest(tmp_path / "s", Toy)["shards"]) == n - 1
    counts = _write(tmp_path / "s", [140 - 2 * (n - 1)], 2, start=2 * (n - 1))  # resumes, redoes that shard
    m2, ids, xs = _rows(tmp_path / "s")
    assert ids == [f"r{i}" for i in range(140)] and xs == list(range(140)) and counts["rows"] == 140


def test_a_journal_already_folded_in_is_skipped_and_a_contradicting_one_refused(tmp_path):
    m = _crashed_with_journal(tmp_path / "s")
    j = tmp_path / "s" / JOURNAL
    lines = j.read_bytes()
    shards_mod.atomic_write_json(tmp_path / "s" / MANIFEST, m, lambda p: True)  # folded, journal not yet removed
    j.write_bytes(lines)
    assert read_manifest(tmp_path / "s", Toy)["shards"] == m["shards"]
    bad = json.loads(lines.splitlines()[0])
    bad["sha256"] = "0" * 64
    j.write_bytes(json.dumps(bad).encode() + b"\n" + lines)
    with pytest.raises(StoreError, match="contradicts"):
        read_manifest(tmp_path / "s", Toy)
    gap = json.loads(lines.splitlines()[-1])
    gap["index"] += 5
    j.write_bytes(json.dumps(gap).encode() + b"\n")
    with pytest.raises(StoreError, match="after shard"):
        read_manifest(tmp_path / "s", Toy)


def test_a_resume_refusal_names_every_differing_setting_and_the_way_out(tmp_path):
    _write(tmp_path / "s", [3], 2, finalize=False)
    with pytest.raises(StoreError) as e:
        with ShardedWriter(tmp_path / "s", Toy({"v": 2, "pooling": "mean"}), 2):
            pass
    said = str(e.value)
    assert "pooling: None there, 'mean' now" in said and "v: 1 there, 2 now" in said and "--overwrite" in said
