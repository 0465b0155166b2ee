"""lookalike as a bulk-embedding user meets it: a Python API on lists that equals the store, the model's own embeddings
one flag away (and equal to sentence-transformers'), standard input, tasks inferred on export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lookalike.cli import cli
from lookalike.data import CorpusSpec
from lookalike.engine import Embedder, embed, open_store
from lookalike.errors import InputError
from lookalike.params import EmbedParams


def _texts(shared_data, n=80):
    return [r.text for r in CorpusSpec(shared_data / "imdb" / "imdb_test_2k.tsv", limit=n).records()]


def test_encode_equals_the_store_byte_for_byte(tiny_exports, shared_data, tmp_path):
    texts = _texts(shared_data)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
    params = EmbedParams(max_length=64, shard_rows=30, sort_window=12, batch_tokens=256)
    embed(tiny_exports["bert2"], CorpusSpec(corpus), tmp_path / "store", params, tokens=False)
    stored = open_store(tmp_path / "store").embeddings()
    model = Embedder(tiny_exports["bert2"], max_length=64, batch_tokens=256)
    got = model.encode([t.replace("\n", " ") for t in texts])
    # the API's one window is the whole list, the store's are 12 rows: other batches, same vectors
    np.testing.assert_allclose(got, stored, rtol=0, atol=2e-6)
    # with the store's windows, the very bytes
    same = Embedder(tiny_exports["bert2"], max_length=64, batch_tokens=256)
    same.defaults = params
    assert np.array_equal(same.encode([t.replace("\n", " ") for t in texts]), stored)
    assert model.encode([]).shape == (0, model.dim)
    assert model.encode(["one"], normalize=True).dtype == np.float32


def test_encode_refuses_what_is_not_a_list_of_texts(tiny_exports):
    model = Embedder(tiny_exports["bert2"])
    assert model.encode("a great movie").shape == (model.dim,)  # one text alone: one vector, as sentence-transformers
    with pytest.raises(InputError, match="not one string"):
        model.encode(["a great movie"], "its pair")  # a list of texts with one string of pairs
    with pytest.raises(InputError, match="text 1 is a int"):
        model.encode(["fine", 3])
    with pytest.raises(InputError, match="2 texts but 1 pairs"):
        model.encode(["a", "b"], ["c"])


@pytest.fixture(scope="module")
def st_reference(minilm_dir, shared_data):
    from sentence_transformers import SentenceTransformer

    texts = _texts(shared_data, 40) + ["", "a", "Short one.", "x " * 600]
    return texts, SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_numpy=True)


def test_pooling_auto_equals_sentence_transformers(minilm_export, st_reference, tmp_path):
    texts, ref = st_reference
    m = json.loads((minilm_export / "lookalike.json").read_text())
    assert m["sentence_transformers"]["pooling"] == "mean" and m["sentence_transformers"]["normalize"]
    model = Embedder(minilm_export, pooling="auto")  # auto: ST's max_seq_length (256) too, not the 512 positions
    assert model.settings()["pooling"] == "mean" and model.settings()["normalize"]
    assert model.settings()["max_length"] == 256 == m["sentence_transformers"]["max_seq_length"]
    got = model.encode(texts)
    assert (got * ref).sum(1).min() >= 0.9999
    cls = Embedder(minilm_export, max_length=256).encode(texts)  # the default: CLS, as the paper
    assert (cls * ref).sum(1).mean() / np.linalg.norm(cls, axis=1).mean() < 0.9

    corpus = tmp_path / "t.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    r = CliRunner().invoke(cli, ["embed", str(minilm_export), str(corpus), str(tmp_path / "s"), "--pooling", "auto"])
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout)
    assert stats["pooling"] == "mean" and stats["normalize"] and "auto" in stats["pooling_from"]
    store = open_store(tmp_path / "s")
    assert store.config["pooling"] == "mean" and store.config["pooling_from"].startswith("auto")
    assert store.config["max_length"] == 256
    assert (store.embeddings() * ref).sum(1).min() >= 0.9999


def test_pooling_auto_equals_sentence_transformers_on_long_real_texts(minilm_dir, minilm_export, shared_data, caplog):
    """Texts between 256 and 512 tokens: the model's own max_seq_length (256) decides, as in sentence-transformers;
    a --max-length that differs is said once and gives other vectors."""
    from sentence_transformers import SentenceTransformer

    recs = CorpusSpec(shared_data / "imdb" / "imdb_test_2k.tsv", limit=400).records()
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    texts = [r.text for r in recs if 256 < len(st.tokenizer(r.text)["input_ids"]) <= 700][:40]
    assert len(texts) >= 30
    ref = st.encode(texts, convert_to_numpy=True)
    got = Embedder(minilm_export, pooling="auto").encode(texts)
    assert (got * ref).sum(1).min() >= 0.9999
    caplog.clear()
    longer = Embedder(minilm_export, pooling="auto", max_length=512)
    other = longer.encode(texts)
    assert (other * ref).sum(1).min() < 0.999  # the model's positions are not its own embedding
    assert sum("max_seq_length) is 256" in r.getMessage() for r in caplog.records) == 1


def test_default_pooling_tells_the_user_about_auto(minilm_export, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a great movie\nterrible acting\n")
    r = CliRunner().invoke(cli, ["embed", str(minilm_export), str(corpus), str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    notes = [line for line in r.stderr.splitlines() if "--pooling auto" in line]
    assert len(notes) == 1 and notes[0].startswith("note:") and "mean + normalize" in notes[0]
    r = CliRunner().invoke(cli, ["-q", "embed", str(minilm_export), str(corpus), str(tmp_path / "q")])
    assert r.exit_code == 0 and "--pooling auto" not in r.stderr


def test_embed_reads_standard_input(tiny_exports, tmp_path):
    lines = ["a great movie", "terrible acting", "", "fine"]
    r = CliRunner().invoke(cli, ["embed", str(tiny_exports["bert2"]), "-", str(tmp_path / "s")],
                           input="\n".join(lines) + "\n")
    assert r.exit_code == 0, r.output
    store = open_store(tmp_path / "s")
    assert len(store) == 4
    np.testing.assert_allclose(store.embeddings(), Embedder(tiny_exports["bert2"]).encode(lines), atol=2e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # the spooled input is gone
    r = CliRunner().invoke(cli, ["embed", str(tiny_exports["bert2"]), "-", str(tmp_path / "e")], input="")
    assert r.exit_code == 2 and "standard input is empty" in r.output


def test_export_infers_the_task_from_the_checkpoint(tiny_models, tmp_path):
    from lookalike.exporters import export

    m = export(str(tiny_models["cls"]), tmp_path / "cls")
    assert m["task"] == "text-classification" and m["task_inferred_from"] == "BertForSequenceClassification"
    r = CliRunner().invoke(cli, ["export", str(tiny_models["qa"]), str(tmp_path / "qa")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["task"] == "question-answering"
    assert "inferred from BertForQuestionAnswering" in r.stderr
    assert export(str(tiny_models["bert2"]), tmp_path / "fe")["task"] == "feature-extraction"


def test_int8_scheme_implies_int8(tiny_models, tmp_path):
    from lookalike.exporters import export

    m = export(str(tiny_models["bert2"]), tmp_path / "q", int8_scheme="dynamic-reduce-range")
    assert m["variant"]["quantize"] == "int8" and m["variant"]["int8_scheme"] == "dynamic-reduce-range"
    assert "dynamic reduce-range" in m["variant"]["description"]


def test_quiet_is_quiet_and_notes_say_what_was_inferred(tiny_models, tmp_path):
    """-q: nothing on stderr for a clean export (no library deprecations or tracer warnings); without it, only
    lookalike's own one-line notes."""
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "lookalike.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=300)

    r = run("-q", "export", tiny_models["cls"], tmp_path / "q")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    r = run("export", tiny_models["cls"], tmp_path / "n")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == ["note: task text-classification (inferred from BertForSequenceClassification; "
                                     "--task overrides)"]


def test_finetune_limit_draws_every_class(tiny_models, shared_data, tmp_path, caplog):
    from lookalike.finetune import _select
    from lookalike.params import FinetuneParams

    data = CorpusSpec(shared_data / "imdb" / "imdb_train_5k.tsv", limit=40).for_labels()
    first, how = _select(data, FinetuneParams(shuffle=False))
    assert len({r.label for r in first}) == 1 and how == "the first 40"  # the file is sorted by label
    drawn, how = _select(data, FinetuneParams())
    labels = [r.label for r in drawn]
    assert len(drawn) == 40 and min(labels.count(x) for x in set(labels)) >= 10 and "seed 42" in how
    assert [r.id for r in _select(data, FinetuneParams())[0]] == [r.id for r in drawn]  # deterministic


def test_experiment_paths_resolve_against_the_file(tmp_path):
    from lookalike.experiment import run_experiment

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "e.yaml").write_text("title: t\nout: ../runs/tiny\nmodels: 5\n")
    with pytest.raises(InputError):  # fails on the models field, after out: was resolved
        run_experiment(exp / "e.yaml")
    import lookalike.experiment.runner as e

    seen = {}

    class Probe:
        def __init__(self, cfg, out, base, **kw):
            seen.update(out=out, base=base)

        def run(self):
            return seen["out"] / "report"

    orig = e.Experiment
    e.Experiment = Probe
    try:
        run_experiment(exp / "e.yaml")
    finally:
        e.Experiment = orig
    assert seen["out"] == (tmp_path / "runs" / "tiny").resolve() and seen["base"] == exp.resolve()


def test_embed_overwrite_replaces_only_its_own_store(tiny_exports, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\ntwo\nthree\n")
    out = tmp_path / "s"
    assert CliRunner().invoke(cli, ["embed", str(tiny_exports["bert2"]), str(corpus), str(out)]).exit_code == 0
    (out / "notes.md").write_text("mine")
    r = CliRunner().invoke(cli, ["embed", str(tiny_exports["bert2"]), str(corpus), str(out), "--max-length", "8"])
    assert r.exit_code == 2 and "other settings" in r.output
    r = CliRunner().invoke(cli, ["embed", str(tiny_exports["bert2"]), str(corpus), str(out), "--max-length", "8",
                                 "--overwrite"])
    assert r.exit_code == 2 and "notes.md" in r.output  # the user's file stays, so the folder is not ours to fill
    (out / "notes.md").unlink()
    r = CliRunner().invoke(cli, ["embed", str(tiny_exports["bert2"]), str(corpus), str(out), "--max-length", "8",
                                 "--overwrite"])
    assert r.exit_code == 0, r.output
    assert open_store(out).config["max_length"] == 8


def test_bench_interleaves_refuses_duplicates_and_says_speedups(tiny_models, tiny_exports, tmp_path):
    from lookalike.analysis.report import write_bench
    from lookalike.engine.bench import run_bench
    from lookalike.exporters import export

    with pytest.raises(InputError, match="listed twice"):
        run_bench([tiny_exports["bert2"], str(tiny_exports["bert2"]) + "/"], [1], [16], repeat=3)
    q = export(str(tiny_models["bert2"]), tmp_path / "q", int8_scheme="dynamic")
    assert q["variant"]["quantize"] == "int8"
    res = run_bench([tiny_exports["bert2"], tmp_path / "q"], [1, 2], [16], repeat=6)
    write_bench(res, tmp_path / "b")
    first, int8 = res["models"]
    assert all(r["speedup_vs_first"] == 1.0 and r["fraction_of_ceiling"] is not None for r in first["latency"])
    assert all(r["speedup_vs_first"] > 0 and r["fraction_of_ceiling"] is None for r in int8["latency"])
    assert all(0 <= r["spread"] for m in res["models"] for r in m["latency"])
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "× bert2" in md and "| spread |" in md and "interleaved" in res["timing"]


def test_pooling_auto_reads_the_source_of_an_older_export(minilm_export, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(minilm_export, old)
    m = json.loads((old / "lookalike.json").read_text())
    del m["sentence_transformers"]  # as exports made before this was recorded
    (old / "lookalike.json").write_text(json.dumps(m))
    assert Embedder(old, pooling="auto").settings()["pooling"] == "mean"


def test_truncate_dim_equals_sentence_transformers(minilm_export, st_reference, minilm_dir, tmp_path):
    """Matryoshka truncation after normalising, as SentenceTransformer.encode(truncate_dim=N); recorded; bad values
    one line."""
    from sentence_transformers import SentenceTransformer

    texts, _ = st_reference
    ref = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, truncate_dim=64, convert_to_numpy=True)
    model = Embedder(minilm_export, pooling="auto", truncate_dim=64)
    got = model.encode(texts)
    assert got.shape == ref.shape == (len(texts), 64) and model.dim == 64
    np.testing.assert_allclose(got, ref, atol=2e-4)
    corpus = tmp_path / "t.txt"
    corpus.write_text("one\ntwo\n")
    r = CliRunner().invoke(cli, ["embed", str(minilm_export), str(corpus), str(tmp_path / "s"), "--truncate-dim", "32"])
    assert r.exit_code == 0, r.output
    store = open_store(tmp_path / "s")
    assert store.config["truncate_dim"] == 32 and store.embeddings().shape == (2, 32)
    with pytest.raises(InputError, match="more than the model's 384"):
        Embedder(minilm_export, truncate_dim=385).encode(["x"])


def test_an_export_made_before_max_seq_length_was_recorded_reads_it_from_its_source(minilm_export, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(minilm_export, old)
    m = json.loads((old / "lookalike.json").read_text())
    m["sentence_transformers"] = {k: m["sentence_transformers"][k] for k in
                                  ("pooling", "normalize", "modules", "supported", "unsupported", "source")}
    (old / "lookalike.json").write_text(json.dumps(m))
    assert Embedder(old, pooling="auto").settings()["max_length"] == 256
    assert Embedder(old).settings()["max_length"] == 512  # CLS: the model's positions
