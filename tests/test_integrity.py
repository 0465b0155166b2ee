"""Fault injection for artifact integrity (issue 14): every case ends in a correct result or a one-line error
(exit 2) naming the file/record/field, with nothing lost. Numbers refer to the issue's list."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from lookalike.analysis.agreement import error_agreement
from lookalike.analysis.scoring import load_errors
from lookalike.cli import cli
from lookalike.data import CorpusSpec
from lookalike.engine import embed, open_store
from lookalike.errors import InputError, LookalikeError, StoreError
from lookalike.files import WriterLock
from lookalike.jobs import evaluate
from lookalike.params import EmbedParams


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(r, *needles):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.jsonl"
    p.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document number {i} " * (1 + i % 7)}) + "\n"
                         for i in range(40)))
    return p


# 1 ------------------------------------------------------------------------------------------------------------
def test_embed_never_deletes_what_it_did_not_create(tiny_exports, corpus, tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "thesis.tmp").write_text("draft")
    r = _run("embed", tiny_exports["bert2"], corpus, out)
    _one_line_error(r, "not empty and not a lookalike store", "thesis.tmp")
    assert (out / "thesis.tmp").read_text() == "draft"
    # inside a real store, a user's file with a temporary-looking name survives a resume; the store's own
    # leftovers (a crashed writer's temporaries) are cleaned
    store = tmp_path / "s"
    embed(tiny_exports["bert2"], corpus, store, EmbedParams(shard_rows=10))
    (store / "notes.tmp").write_text("mine")
    (store / "part-00009.h5.4242-deadbeef.tmp").write_text("a crashed writer's")
    m = json.loads((store / "manifest.json").read_text())
    m["complete"], m["shards"] = False, m["shards"][:2]
    (store / "manifest.json").write_text(json.dumps(m))
    embed(tiny_exports["bert2"], corpus, store, EmbedParams(shard_rows=10))
    assert (store / "notes.tmp").read_text() == "mine"
    assert not (store / "part-00009.h5.4242-deadbeef.tmp").exists()
    assert _run("embed", tiny_exports["bert2"], corpus, tmp_path / "corpus.jsonl").exit_code == 2  # OUT is a file


# 2 ------------------------------------------------------------------------------------------------------------
def test_a_second_writer_fails_at_once(tiny_exports, corpus, tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    with WriterLock(out):
        with pytest.raises(LookalikeError, match=f"is being written by pid {os.getpid()}"):
            embed(tiny_exports["bert2"], corpus, out)
    embed(tiny_exports["bert2"], corpus, out)  # the lock is released with its holder
    assert len(open_store(out)) == 40


# 3 ------------------------------------------------------------------------------------------------------------
def _swap_rows(shard):
    with h5py.File(shard, "r+") as f:
        e = f["embedding"][:]
        e[[0, 1]] = e[[1, 0]]
        f["embedding"][:] = e


def test_readers_verify_shards_and_embed_repairs_them(tiny_exports, corpus, tmp_path):
    store = tmp_path / "s"
    embed(tiny_exports["bert2"], corpus, store, EmbedParams(shard_rows=10))
    good = open_store(store).embeddings()
    _swap_rows(store / "part-00001.h5")
    with pytest.raises(StoreError, match=r"part-00001\.h5: checksum mismatch.*re-run the `lookalike embed`"):
        open_store(store)
    r = _run("knn", store, tmp_path / "nn.h5", "--k", "3")
    _one_line_error(r, "part-00001.h5", "checksum mismatch")
    r = _run("ood", "--train", store, "--test", store, tmp_path / "o.json")
    _one_line_error(r, "part-00001.h5")
    shard = store / "part-00002.h5"
    shard.write_bytes(shard.read_bytes()[:2000])  # truncated
    _one_line_error(_run("knn", store, tmp_path / "nn.h5", "--k", "3"), "part-00001.h5")
    # the repair the message names: re-run the same embed; the damaged shards are redone, the result is exact
    embed(tiny_exports["bert2"], corpus, store, EmbedParams(shard_rows=10))
    np.testing.assert_array_equal(open_store(store).embeddings(), good)
    # a store whose manifest lies about the rows is refused too
    m = json.loads((store / "manifest.json").read_text())
    m["shards"][0]["rows"] = 9
    (store / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="part-00000.h5"):
        open_store(store)


# 4 ------------------------------------------------------------------------------------------------------------
def test_partial_predictions_are_refused_and_universes_must_match(shared_data, tmp_path):
    data = shared_data / "squad2_dev500"
    ids = [q["id"] for q in json.loads((data / "queries.json").read_text())["queries"]]
    full = {q: "" for q in ids}
    partial = {q: "" for q in ids[:100]}
    (tmp_path / "full.json").write_text(json.dumps(full))
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    r = _run("evaluate", data, tmp_path / "partial.json")
    _one_line_error(r, "no prediction for 400 of 500 records", ids[100], "--allow-missing")
    r = _run("evaluate", data, tmp_path / "partial.json", "--allow-missing", "-o", tmp_path / "p")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["total"] == m["scored"] == 100 and m["missing"] == 400 and m["complete"] is False
    evaluate(data, tmp_path / "full.json", out=tmp_path / "f")
    evaluate(data, tmp_path / "full.json", out=tmp_path / "g")
    errors = json.loads((tmp_path / "f" / "errors.json").read_text())
    assert errors["universe"]["n"] == 500 and errors["dataset_fingerprint"] == CorpusSpec(data).fingerprint()
    # two identical models over the same questions agree perfectly; over different questions: refused
    assert error_agreement(load_errors(tmp_path / "f"), load_errors(tmp_path / "g"))["jaccard"] == 1.0
    r = _run("agree", "--errors", f"a={tmp_path / 'f'}", "--errors", f"b={tmp_path / 'p'}", "--reps", "0")
    _one_line_error(r, "scored on 500 questions", "on 100")
    # other tools' error sets: a JSON list and a text file; --dataset checks they belong to the data
    (tmp_path / "theirs.json").write_text(json.dumps(ids[:30]))
    (tmp_path / "theirs.txt").write_text("\n".join(ids[10:40]) + "\n")
    r = _run("agree", "--errors", f"a={tmp_path / 'theirs.json'}", "--errors", f"b={tmp_path / 'theirs.txt'}",
             "--format", "json", "--reps", "0")
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["errors_jaccard"] == pytest.approx(20 / 40)
    assert "unchecked" in r.stderr
    r = _run("agree", "--errors", f"a={tmp_path / 'theirs.json'}", "--errors", f"b={tmp_path / 'theirs.txt'}",
             "--dataset", data, "--format", "json", "--reps", "200")
    row = json.loads(r.stdout)[0]
    assert r.exit_code == 0 and "unchecked" not in r.stderr and row["errors_jaccard_lo"] <= 0.5 <= row["errors_jaccard_hi"]
    (tmp_path / "alien.txt").write_text("not-a-squad-id\n")
    _one_line_error(_run("agree", "--errors", f"a={tmp_path / 'alien.txt'}", "--errors", f"b={tmp_path / 'f'}",
                         "--dataset", data), "not in")


# 5 ------------------------------------------------------------------------------------------------------------
def test_ood_refuses_stores_of_different_features(tiny_exports, corpus, tmp_path):
    embed(tiny_exports["bert2"], corpus, tmp_path / "cls", EmbedParams(pooling="cls"))
    embed(tiny_exports["bert2"], corpus, tmp_path / "mean", EmbedParams(pooling="mean"))
    embed(tiny_exports["bert4"], corpus, tmp_path / "other")
    r = _run("ood", "--train", tmp_path / "cls", "--test", tmp_path / "mean", tmp_path / "o.json")
    _one_line_error(r, "differ in pooling")
    r = _run("ood", "--train", tmp_path / "cls", "--test", tmp_path / "cls", "--in-test", tmp_path / "other",
             tmp_path / "o.json")
    assert r.exit_code == 2  # bert4 has another dimension and model
    assert not (tmp_path / "o.json").exists()


# 6 ------------------------------------------------------------------------------------------------------------
def test_an_edit_anywhere_is_another_corpus_and_paths_do_not_matter(tiny_exports, tmp_path, monkeypatch):
    big = tmp_path / "big.txt"
    lines = [f"line {i} " + "x" * 200 for i in range(6000)]  # > 1 MiB
    big.write_text("\n".join(lines) + "\n")
    assert big.stat().st_size > (1 << 20)
    fp = CorpusSpec(big).fingerprint()
    edited = lines.copy()
    edited[-1] = edited[-1][:-1] + "y"  # same size, after the first MiB
    big.write_text("\n".join(edited) + "\n")
    assert CorpusSpec(big).fingerprint() != fp
    small = tmp_path / "small.txt"
    small.write_text("a\nb\nc\n")
    monkeypatch.chdir(tmp_path)
    assert CorpusSpec("small.txt").fingerprint() == CorpusSpec(small).fingerprint()
    embed(tiny_exports["bert2"], "small.txt", tmp_path / "s")
    assert embed(tiny_exports["bert2"], small, tmp_path / "s").get("already_complete")  # same corpus
    small.write_text("a\nb\nd\n")
    with pytest.raises(StoreError, match="corpus_fingerprint"):
        embed(tiny_exports["bert2"], small, tmp_path / "s")


# 7 ------------------------------------------------------------------------------------------------------------
def test_a_failed_run_leaves_nothing_that_blocks_the_retry(tiny_exports, corpus, tmp_path):
    out = tmp_path / "s"
    r = _run("embed", tiny_exports["bert2"], tmp_path / "missing.jsonl", out, "--max-length", "32")
    _one_line_error(r, "missing.jsonl", "no such file")
    assert not out.exists()
    assert _run("embed", tiny_exports["bert2"], corpus, out, "--max-length", "64").exit_code == 0


# 8 ------------------------------------------------------------------------------------------------------------
def test_warnings_print_by_default_and_q_silences_them(tiny_exports, corpus, tmp_path):
    store = tmp_path / "s"
    assert _run("embed", tiny_exports["bert2"], corpus, store, "--shard-rows", "10").exit_code == 0
    for quiet in (False, True):
        _swap_rows(store / "part-00002.h5")
        r = _run(*(["-q"] if quiet else []), "embed", tiny_exports["bert2"], corpus, store, "--shard-rows", "10")
        assert r.exit_code == 0, r.output
        warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
        assert (warned == []) == quiet, r.stderr
        if not quiet:
            assert len(warned) == 1 and "part-00002.h5" in warned[0] and "re-doing it" in warned[0]


# 9 ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps,needle", [
    ({"embed": {"backend": "ray", "address": "ray://evil:10001"}}, "comes from the command line"),
    ({"embed": {"runtime_env": {"pip": ["x"]}}}, "unknown key 'runtime_env'"),
    ({"embed": {"max_lenght": 64}}, "did you mean 'max_length'"),
    ({"knn": {"k": "ten"}}, "field 'k': expected an integer"),
    ({"ood": {"tpr": 1.5}}, "above the maximum"),
    ({"embedd": {}}, "did you mean 'embed'"),
])
def test_experiment_files_are_schema_checked(tmp_path, steps, needle):
    cfg = {"models": [{"name": "a", "base": "minilm"}], "steps": steps}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(cfg))
    _one_line_error(_run("run", tmp_path / "e.yaml", "-o", tmp_path / "out"), "e.yaml", needle)
    assert not (tmp_path / "out").exists()


# 10 -----------------------------------------------------------------------------------------------------------
def test_expected_failures_are_one_line(tiny_exports, corpus, tmp_path, monkeypatch):
    embed(tiny_exports["bert2"], CorpusSpec(corpus, limit=12), tmp_path / "s12")
    # IVF on fewer points than its default lists: a correct result (the exact neighbours), not a FAISS traceback
    r = _run("knn", tmp_path / "s12", tmp_path / "ivf.h5", "--index", "ivf", "--k", "3")
    assert r.exit_code == 0 and json.loads(r.stdout)["recall_at_k"] == 1.0, r.output
    assert _run("knn", tmp_path / "s12", tmp_path / "flat.h5", "--k", "3").exit_code == 0
    from lookalike.analysis.knn import load_knn

    np.testing.assert_array_equal(load_knn(tmp_path / "ivf.h5").neighbors, load_knn(tmp_path / "flat.h5").neighbors)
    for args in (["knn", tmp_path / "s12", tmp_path / "nn.h5", "--block-rows", "0"],
                 ["embed", tiny_exports["bert2"], corpus, tmp_path / "e", "--max-length", "-5"],
                 ["embed", tiny_exports["bert2"], corpus, tmp_path / "e", "--max-length", "0"],
                 ["embed", tiny_exports["bert2"], corpus, tmp_path / "e", "--limit", "0"]):
        r = _run(*args)
        assert r.exit_code == 2 and "Traceback" not in r.output and "Invalid value" in r.output, r.output
    (tmp_path / "folder").mkdir()
    _one_line_error(_run("knn", tmp_path / "s12", tmp_path / "folder", "--k", "3"), "is a folder")
    (tmp_path / "user.h5").write_text("a user's file")
    _one_line_error(_run("knn", tmp_path / "s12", tmp_path / "user.h5", "--k", "3"), "refusing to replace it")
    assert (tmp_path / "user.h5").read_text() == "a user's file"
    (tmp_path / "p.json").write_text("{}")
    (tmp_path / "na.json").write_text('["not", "a", "mapping"]')
    r = _run("evaluate", tmp_path / "corpus.jsonl", tmp_path / "p.json", "--na-prob-file", tmp_path / "na.json",
             "--allow-missing")
    assert r.exit_code == 2 and "Traceback" not in r.output
    preds = {f"d{i}": "" for i in range(40)}
    (tmp_path / "p.json").write_text(json.dumps(preds))
    (tmp_path / "na.json").write_text(json.dumps({"d0": "high"}))
    _one_line_error(_run("evaluate", corpus, tmp_path / "p.json", "--na-prob-file", tmp_path / "na.json",
                         "--text-field", "text", "--pair-field", "text"), "question d0", "not a finite number")
    (tmp_path / "m.yaml").write_text("models: 5\n")
    _one_line_error(_run("run", tmp_path / "m.yaml"), "m.yaml", "field 'models'")

    import lookalike.files as files

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o.json"))

    monkeypatch.setattr(files, "atomic_write_json", disk_full)
    import lookalike.outputs as outputs_mod

    monkeypatch.setattr(outputs_mod.OwnedFolder, "write_json", disk_full)
    _one_line_error(_run("ood", "--train", tmp_path / "s12", "--test", tmp_path / "s12", "--k", "2",
                         "--allow-overlap", tmp_path / "o.json"), "No space left on device")


# 11 -----------------------------------------------------------------------------------------------------------
def test_renames_are_made_durable(tiny_exports, corpus, tmp_path, monkeypatch):
    import lookalike.files as files

    calls = []
    real = files.fsync_dir
    monkeypatch.setattr(files, "fsync_dir", lambda p: (calls.append(str(p)), real(p)))
    real_replace = os.replace

    def replace(a, b):
        calls.append(f"rename {os.path.basename(b)}")
        return real_replace(a, b)

    monkeypatch.setattr(files.os, "replace", replace)
    embed(tiny_exports["bert2"], corpus, tmp_path / "s", EmbedParams(shard_rows=20))
    store = str(tmp_path / "s")
    for name in ("part-00000.h5", "manifest.json", "embeddings.h5"):
        i = max(i for i, c in enumerate(calls) if c == f"rename {name}")
        assert calls[i + 1] == store, (name, calls[i:i + 2])  # every rename is followed by the folder's fsync


# also ---------------------------------------------------------------------------------------------------------
def test_jsonl_ids_come_from_the_records_when_they_have_them(tiny_exports, tmp_path):
    with_ids = tmp_path / "a.jsonl"
    with_ids.write_text('{"id": "x7", "text": "a"}\n{"id": "y9", "text": "b"}\n')
    stats = embed(tiny_exports["bert2"], with_ids, tmp_path / "a")
    assert list(open_store(tmp_path / "a").ids) == ["x7", "y9"] and "field 'id'" in stats["ids"]
    without = tmp_path / "b.jsonl"
    without.write_text('{"text": "a"}\n{"text": "b"}\n')
    stats = embed(tiny_exports["bert2"], without, tmp_path / "b")
    assert list(open_store(tmp_path / "b").ids) == ["0", "1"] and stats["ids"] == "row numbers"
    mixed = tmp_path / "c.jsonl"
    mixed.write_text('{"id": "x7", "text": "a"}\n{"text": "b"}\n')
    with pytest.raises(InputError, match="line 2: field 'id': missing"):
        embed(tiny_exports["bert2"], mixed, tmp_path / "c")


# kill -9 at random points, then resume: byte-identical results --------------------------------------------------
KILLABLE = textwrap.dedent("""
    import sys
    from lookalike.cli import main
    sys.argv = ["lookalike", *sys.argv[1:]]
    main()
""")


def _cli_process(tmp_path, *args):
    script = tmp_path / "cli.py"
    script.write_text(KILLABLE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, str(script), "-q", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)


def _run_killed(tmp_path, rng, args, seconds: float, kills: int = 3) -> list[float]:
    """Start the command and SIGKILL it at random moments of a run that takes about `seconds`, `kills` times."""
    when = []
    for _ in range(kills):
        p = _cli_process(tmp_path, *args)
        t = float(rng.uniform(0.3, 1.0) * seconds)
        try:
            p.wait(timeout=t)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            when.append(round(t, 2))
    return when


def _kill_after_shards(tmp_path, rng, args, out, n_shards: int, kills: int = 3) -> list[int]:
    """SIGKILL an embed once its manifest lists a random number of shards (mid-write, not during imports)."""
    at = []
    for _ in range(kills):
        target = int(rng.integers(1, n_shards))
        p = _cli_process(tmp_path, *args)
        while p.poll() is None:
            try:
                done = len(json.loads((out / "manifest.json").read_text())["shards"])
            except (OSError, ValueError):
                done = 0
            if done >= target:
                p.kill()
                p.wait()
                at.append(done)
                break
            time.sleep(0.005)
    return at


@pytest.mark.slow
def test_kill_9_anywhere_then_resume_gives_identical_bytes(tiny_exports, shared_data, tmp_path):
    rng = np.random.default_rng(14)
    data = shared_data / "squad2_dev500"
    model, qa = tiny_exports["bert2"], tiny_exports["qa"]
    jobs = {
        "embed": (["embed", model, data, "{out}", "--shard-rows", "25", "--max-length", "128", "--limit", "400"],
                  lambda out: [s["sha256"] for s in json.loads((out / "manifest.json").read_text())["shards"]]),
        "predict": (["predict", qa, data, "{out}", "--task", "qa", "--limit", "150", "--max-length", "128",
                     "--doc-stride", "64"], lambda out: (out / "predictions.json").read_bytes()),
    }
    for name, (args, result) in jobs.items():
        ref_out, out = tmp_path / f"{name}-ref", tmp_path / f"{name}-killed"
        t0 = time.perf_counter()
        p = _cli_process(tmp_path, *[a if a != "{out}" else ref_out for a in args])
        assert p.wait() == 0, p.stderr.read().decode()
        seconds = time.perf_counter() - t0
        run_args = [a if a != "{out}" else out for a in args]
        if name == "embed":
            killed_at = _kill_after_shards(tmp_path, rng, run_args, out, n_shards=16)
            assert len(killed_at) == 3 and not json.loads((out / "manifest.json").read_text())["complete"]
        else:
            killed_at = _run_killed(tmp_path, rng, run_args, seconds)
        p = _cli_process(tmp_path, *[a if a != "{out}" else out for a in args])
        assert p.wait() == 0, (name, killed_at, p.stderr.read().decode())
        assert result(out) == result(ref_out), (name, killed_at)
    # knn on the finished store: killed runs leave no partial neighbour file, the re-run is byte-identical
    store = tmp_path / "embed-ref"
    t0 = time.perf_counter()
    p = _cli_process(tmp_path, "knn", store, tmp_path / "ref.h5", "--k", "10")
    assert p.wait() == 0
    _run_killed(tmp_path, rng, ["knn", store, tmp_path / "nn.h5", "--k", "10"], time.perf_counter() - t0)
    # a kill never leaves a partial file under the real name (only a run that finished before its kill wrote it)
    assert not (tmp_path / "nn.h5").exists() or (tmp_path / "nn.h5").read_bytes() == (tmp_path / "ref.h5").read_bytes()
    p = _cli_process(tmp_path, "knn", store, tmp_path / "nn.h5", "--k", "10")
    assert p.wait() == 0
    assert (tmp_path / "nn.h5").read_bytes() == (tmp_path / "ref.h5").read_bytes()
    # a SIGKILLed writer's temporary (its pid now dead) is removed by the next run
    assert [f.name for f in tmp_path.glob("nn.h5.*")] == []
    shutil.rmtree(tmp_path / "embed-killed")
