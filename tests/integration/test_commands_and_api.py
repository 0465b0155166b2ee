"""A new user's day on tiny exports: the Python API speaks sentence-transformers (a folder exported once and cached by
content, one string in -> one vector out), a store from a list or a Dataset, `cuda:N`, commands that agree (corpus
options, `agree --k` sweeps, -q after the subcommand), query-bank kNN, FAISS index files, sentence-transformers
folders, quiet notes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lookalike.cli import cli
from lookalike.errors import InputError, ModelError

TEXTS = ["a great movie", "terrible acting and a worse plot", "what is the capital of France?", "naïve café"]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_embedder_takes_a_model_folder_exported_once_by_content(minilm_dir, minilm_export, cache, tmp_path):
    from sentence_transformers import SentenceTransformer

    from lookalike import Embedder

    m = Embedder(str(minilm_dir), pooling="auto")  # a sentence-transformers folder, not an export
    exports = list((cache / "exports").iterdir())
    assert len(exports) == 1 and (exports[0] / "lookalike.json").is_file()
    assert Embedder("minilm").model.dir == exports[0]  # the same content: the same export, not a second one
    ref = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, batch_size=2, normalize_embeddings=True)
    got = m.encode(TEXTS, batch_size=2, show_progress_bar=False, normalize_embeddings=True)
    assert (np.sum(ref * got, 1) > 0.9999).all()
    np.testing.assert_array_equal(got, Embedder(minilm_export, pooling="auto").encode(TEXTS))
    one = m.encode("a great movie")  # one string: one vector, as sentence-transformers
    assert one.shape == (384,) and np.allclose(one, got[0], atol=1e-6)
    import torch

    assert isinstance(m.encode(TEXTS[:2], convert_to_tensor=True), torch.Tensor)
    with pytest.raises(InputError, match="did you mean 'batch_size'"):
        m.encode(TEXTS, batch_sise=3)
    with pytest.raises(InputError, match="texts or sentences"):
        m.encode(TEXTS, sentences=TEXTS)


def test_cuda_n_is_a_device_name(minilm_export):
    from lookalike.core.session import split_device
    from lookalike.engine.runtime import OnnxModel

    assert split_device("cuda:1") == ("cuda", 1) and split_device("cpu") == ("cpu", 0)
    with pytest.raises(ModelError, match="cuda:N"):
        split_device("cuda:x")
    try:
        import onnxruntime as ort
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        has_cuda = False
    if not has_cuda:  # understood, and refused for the real reason: no CUDA provider here
        with pytest.raises(ModelError, match="no CUDAExecutionProvider"):
            OnnxModel(minilm_export, device="cuda:1")
    r = CliRunner().invoke(cli, ["embed", str(minilm_export), "x.txt", "out", "--device", "gpu"])
    assert r.exit_code == 2 and "cuda:N" in r.output


def test_embed_to_store_from_a_list_and_a_dataset(minilm_export, tmp_path):
    import datasets

    from lookalike import Embedder, embed_to_store
    from lookalike.engine import open_store

    stats = embed_to_store(minilm_export, TEXTS, tmp_path / "list", pooling="auto")
    store = open_store(tmp_path / "list")
    assert stats["rows"] == 4 and list(store.ids) == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(store.embeddings(), Embedder(minilm_export, pooling="auto").encode(TEXTS))
    again = embed_to_store(minilm_export, TEXTS, tmp_path / "list", pooling="auto")  # same texts: resumes
    assert again.get("already_complete")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".list.texts-")]  # its copy is gone
    ds = datasets.Dataset.from_dict({"review": TEXTS, "rid": ["a", "b", "c", "d"]})
    embed_to_store(minilm_export, ds, tmp_path / "ds", text_field="review", id_field="rid", limit=3)
    assert list(open_store(tmp_path / "ds").ids) == ["a", "b", "c"]
    with pytest.raises(InputError, match="no column 'text'"):
        embed_to_store(minilm_export, ds, tmp_path / "bad")
    with pytest.raises(InputError, match="did you mean 'pooling'"):
        embed_to_store(minilm_export, TEXTS, tmp_path / "bad", poling="auto")


def test_commands_agree_on_options(minilm_export, shared_data, tmp_path):
    runner = CliRunner()
    corpus = str(shared_data / "imdb" / "imdb_1k.tsv")
    stores = {}
    for name, precision in (("a", "float32"), ("b", "ubinary")):  # binary vectors against float ones
        r = runner.invoke(cli, ["embed", str(minilm_export), corpus, str(tmp_path / name), "--limit", "40",
                                "--precision", precision, "-q"])  # -q after the subcommand
        assert r.exit_code == 0, r.output
        r = runner.invoke(cli, ["knn", str(tmp_path / name), str(tmp_path / f"{name}.h5"), "--k", "10", "-q"])
        assert r.exit_code == 0, r.output
        stores[name] = tmp_path / f"{name}.h5"
    r = runner.invoke(cli, ["agree", "--knn", f"a={stores['a']}", "--knn", f"b={stores['b']}", "--k", "1,5,10",
                            "--reps", "0", "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert sorted({row["k"] for row in rows}) == [1, 5, 10]
    r = runner.invoke(cli, ["agree", "--knn", f"a={stores['a']}", "--knn", f"b={stores['b']}", "--k", "1,5",
                            "--reps", "0"])
    assert r.exit_code == 0 and "K=1" in r.output and "K=5" in r.output
    # corpus options on the optional corpora, and refused without them
    r = runner.invoke(cli, ["bench", str(minilm_export), "--batch-sizes", "1", "--seq-lengths", "8", "--repeat",
                            "1", "--corpus", corpus, "--limit", "8", "--every", "2", "-o", str(tmp_path / "bench")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["bench", str(minilm_export), "--every", "2", "-o", str(tmp_path / "b2")])
    assert r.exit_code == 2 and "--every applies to --corpus" in r.output
    r = runner.invoke(cli, ["agree", "--knn", f"a={stores['a']}", "--knn", f"b={stores['b']}", "--text-field", "x"])
    assert r.exit_code == 2 and "applies to --dataset" in r.output


def test_write_index_loads_in_faiss(minilm_export, shared_data, tmp_path):
    import faiss

    from lookalike.analysis.knn import load_normalized
    from lookalike.engine import open_store

    corpus = str(shared_data / "imdb" / "imdb_1k.tsv")
    assert CliRunner().invoke(cli, ["embed", str(minilm_export), corpus, str(tmp_path / "s"), "--limit", "30"]).exit_code == 0
    r = CliRunner().invoke(cli, ["knn", str(tmp_path / "s"), str(tmp_path / "k.h5"), "--k", "3",
                                 "--write-index", str(tmp_path / "s.faiss")])
    assert r.exit_code == 0, r.output
    index = faiss.read_index(str(tmp_path / "s.faiss"))
    x = load_normalized(open_store(tmp_path / "s"))
    assert index.ntotal == 30
    np.testing.assert_array_equal(faiss.rev_swig_ptr(index.get_xb(), x.size).reshape(x.shape), x)


def test_knn_of_queries_against_a_bank(minilm_export, shared_data, tmp_path):
    """knn --queries: each query's K nearest bank points, exactly (brute force, ties by bank row), in a neighbour
    file agree compares between two models' (or precisions') searches; mixed features and mixed kinds refused."""
    from lookalike.analysis.knn import load_knn, load_normalized
    from lookalike.engine import open_store

    runner = CliRunner()
    reviews, questions = str(shared_data / "imdb" / "imdb_1k.tsv"), str(shared_data / "squad2_dev500")
    for name, corpus, extra in (("bank", reviews, []), ("q", questions, []), ("bank16", reviews, ["--dtype", "float16"]),
                                ("q16", questions, ["--dtype", "float16"]), ("qmean", questions, ["--pooling", "mean"])):
        r = runner.invoke(cli, ["embed", str(minilm_export), corpus, str(tmp_path / name), "--limit", "50", *extra])
        assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["knn", str(tmp_path / "bank"), str(tmp_path / "x.h5"), "--queries", str(tmp_path / "q"),
                            "--k", "5"])
    assert r.exit_code == 0, r.output
    res = load_knn(tmp_path / "x.h5")
    q, x = load_normalized(open_store(tmp_path / "q")), load_normalized(open_store(tmp_path / "bank"))
    sims = q @ x.T
    want = np.array([np.lexsort((np.arange(len(x)), -np.round(s, 6)))[:5] for s in sims])
    np.testing.assert_array_equal(res.neighbors, want)
    assert list(res.targets) == list(open_store(tmp_path / "bank").ids) and len(res.ids) == 50
    r = runner.invoke(cli, ["knn", str(tmp_path / "bank16"), str(tmp_path / "y.h5"), "--queries",
                            str(tmp_path / "q16"), "--k", "5"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["agree", "--knn", f"fp32={tmp_path / 'x.h5'}", "--knn", f"fp16={tmp_path / 'y.h5'}",
                            "--k", "5", "--reps", "0", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["repr_mean"] > 0.9  # float16 keeps almost every neighbour
    r = runner.invoke(cli, ["knn", str(tmp_path / "bank"), str(tmp_path / "z.h5"), "--queries",
                            str(tmp_path / "qmean")])
    assert r.exit_code != 0 and "pooling" in r.output and "Traceback" not in r.output
    runner.invoke(cli, ["knn", str(tmp_path / "bank"), str(tmp_path / "self.h5"), "--k", "5"])
    r = runner.invoke(cli, ["agree", "--knn", f"a={tmp_path / 'x.h5'}", "--knn", f"b={tmp_path / 'self.h5'}",
                            "--k", "5", "--reps", "0"])
    assert r.exit_code != 0 and "self-kNN" in r.output


def test_export_st_folder_loads_in_sentence_transformers(minilm_dir, tiny_models, shared_data, tmp_path, caplog):
    """export --st-folder: the folder loads in sentence-transformers' ONNX backend as is, without a warning, and
    gives lookalike's vectors (the model's own modules; CLS pooling for a model without them); one graph file."""
    import logging

    from sentence_transformers import SentenceTransformer

    from lookalike import Embedder

    texts = [line.rsplit("\t", 1)[0] for line in
             (shared_data / "imdb" / "imdb_1k.tsv").read_text(encoding="utf-8").splitlines()[:12]] + ["", "a"]
    r = CliRunner().invoke(cli, ["export", "minilm", str(tmp_path / "st"), "--st-folder"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "st"
    assert sorted(p.name for p in out.rglob("*.onnx")) == ["model.onnx"]
    with caplog.at_level(logging.WARNING):
        st = SentenceTransformer(str(out), backend="onnx", device="cpu")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    got = st.encode(texts)
    np.testing.assert_allclose(got, Embedder(out, pooling="auto").encode(texts), atol=1e-5)
    torch_ref = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts)
    assert (np.sum(got * torch_ref, 1) > 0.9999).all()
    r = CliRunner().invoke(cli, ["export", str(tiny_models["bert2"]), str(tmp_path / "tiny"), "--st-folder",
                                 "--task", "feature-extraction"])
    assert r.exit_code == 0, r.output
    got = SentenceTransformer(str(tmp_path / "tiny"), backend="onnx", device="cpu").encode(texts)
    np.testing.assert_allclose(got, Embedder(tmp_path / "tiny").encode(texts), atol=1e-5)  # CLS, the default
    r = CliRunner().invoke(cli, ["export", str(tiny_models["cls"]), str(tmp_path / "c"), "--st-folder"])
    assert r.exit_code != 0 and "--st-folder" in r.output and "Traceback" not in r.output


def test_bench_says_which_cell_runs(tiny_exports):
    """bench's latency grid reports each cell as it starts (the progress a person sees), in grid order."""
    from lookalike.engine.bench import interleaved_latency
    from lookalike.engine.runtime import OnnxModel

    seen = []
    m = OnnxModel(tiny_exports["bert2"])
    rows = interleaved_latency([m, m], ["cls", "cls"], [1, 4], [8, 16], repeat=2, on_cell=lambda *a: seen.append(a))
    assert seen == [(1, 4, 1, 8), (2, 4, 4, 8), (3, 4, 1, 16), (4, 4, 4, 16)]
    assert [len(r) for r in rows] == [4, 4]


def test_attack_shares_one_similarity_encoder(tmp_path, monkeypatch):
    """Every attack folder uses one cached export of the packaged MiniLM as its similarity encoder (not an 88 MB
    copy each); a folder begun with its own copy keeps it, so it resumes with the settings it recorded."""
    from lookalike.attack import similarity_encoder

    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    a, b = similarity_encoder(None, tmp_path / "attack-a"), similarity_encoder(None, tmp_path / "attack-b")
    assert a == b and a.parent == tmp_path / "cache" / "exports" and (a / "lookalike.json").is_file()
    assert not (tmp_path / "attack-a").exists()
    legacy = tmp_path / "old" / "similarity-encoder"
    legacy.mkdir(parents=True)
    (legacy / "lookalike.json").write_text("{}")
    assert similarity_encoder(None, tmp_path / "old") == legacy
    assert similarity_encoder(str(tmp_path / "mine"), tmp_path / "x") == tmp_path / "mine"


def test_libraries_known_noise_is_kept_out(tiny_models, tmp_path, caplog):
    """A CPU fp16 export does not print ONNX Runtime's "There is no gpu" (the GPU fusion set is graph rewriting,
    asked for with its provider named) and is still fused; TextAttack's "Unknown if model ... compatible" for
    lookalike's wrapper is filtered, its other messages are not."""
    import logging
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "lookalike.cli", "export", str(tiny_models["bert2"]),
                        str(tmp_path / "fp16"), "--fp16", "--task", "feature-extraction"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "There is no gpu" not in r.stderr
    m = json.loads((tmp_path / "fp16" / "lookalike.json").read_text())
    assert m["variant"]["fused_operators"].get("SkipLayerNormalization")  # the GPU set, applied here

    from lookalike.attack import _prepare_textattack

    _prepare_textattack()
    from textattack.shared import logger

    kept = []
    handler = logging.Handler()
    handler.emit = kept.append
    logger.addHandler(handler)
    try:
        logger.warning("Unknown if model of class X compatible with goal function Y.")
        logger.warning("something else")
    finally:
        logger.removeHandler(handler)
    assert [k.getMessage() for k in kept] == ["something else"]


def test_the_pooling_note_follows_the_checks(minilm_export, tmp_path, caplog):
    """The model's-own-pooling note is said when the run starts, once, and not at all ahead of a refusal."""
    import logging

    from lookalike.engine import embed
    from lookalike.params import EmbedParams

    corpus = tmp_path / "c.txt"
    corpus.write_text("one text\nanother text\n")
    caplog.set_level(logging.INFO)
    with pytest.raises(InputError, match="truncate-dim"):
        embed(minilm_export, corpus, tmp_path / "refused", EmbedParams(truncate_dim=4096), progress=False)
    assert not [r for r in caplog.records if "own embeddings" in r.getMessage()]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("a user's file")
    from lookalike.errors import StoreError

    with pytest.raises(StoreError, match="not a lookalike store"):
        embed(minilm_export, corpus, tmp_path / "taken", EmbedParams(), progress=False)
    assert not [r for r in caplog.records if "own embeddings" in r.getMessage()]
    embed(minilm_export, corpus, tmp_path / "ok", EmbedParams(), progress=False)
    said = [r.getMessage() for r in caplog.records if "own embeddings" in r.getMessage()]
    assert len(said) == 1 and "this run uses cls" in said[0]


def test_an_evaluation_limit_that_holds_one_class_is_said_and_flagged(tiny_exports, shared_data, tmp_path):
    """The first 200 rows of imdb_test_2k.tsv are all positive: predict --limit 200 warns that the scored records
    hold one class, and the error set carries the class counts that make the report mark it not meaningful."""
    import json

    from support import _run

    from lookalike.analysis.scoring import load_errors

    r = _run("predict", tiny_exports["cls"], shared_data / "imdb" / "imdb_test_2k.tsv", tmp_path / "p", "--task",
             "cls", "--limit", "200", "--max-length", "32")
    assert r.exit_code == 0, r.output
    warned = [line for line in r.stderr.splitlines() if "gold label 1" in line]
    assert len(warned) == 1 and "first 200 rows" in warned[0], r.stderr
    errors = json.loads((tmp_path / "p" / "errors.json").read_text())
    assert errors["class_counts"]["gold"] == {"1": 200}
    assert "one class" in load_errors(tmp_path / "p").degenerate
