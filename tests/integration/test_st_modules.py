"""--pooling auto is the model's whole sentence-transformers embedding: its Dense modules after pooling, its
prompts ("query: ", as e5 and bge need), its max_seq_length; each equal to SentenceTransformer.encode, recorded in
the export manifest and in every store. A tiny sentence-transformers model is built here (random weights, the
real WordPiece vocabulary) with Transformer -> Pooling(mean) -> Dense(tanh) -> Normalize."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lookalike.cli import cli
from lookalike.engine import Embedder, open_store
from lookalike.errors import InputError

TEXTS = ["a great movie", "terrible acting and a worse plot", "", "what is the capital of France?",
         "the film " * 40, "Short.", "naïve café 東京 🙂"]


@pytest.fixture(scope="module")
def st_model(tiny_models, tmp_path_factory):
    import torch
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("st-dense") / "model"
    word = models.Transformer(str(tiny_models["bert2"]), max_seq_length=48)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    dense = models.Dense(word.get_word_embedding_dimension(), 16, activation_function=torch.nn.Tanh())
    st = SentenceTransformer(modules=[word, pool, dense, models.Normalize()], device="cpu",
                             prompts={"query": "query: ", "passage": "passage: "}, default_prompt_name="query")
    st.save(str(out))
    return out, st


@pytest.fixture(scope="module")
def st_export(st_model, tmp_path_factory):
    from lookalike.exporters import export

    out = tmp_path_factory.mktemp("st-dense-export") / "exp"
    export(str(st_model[0]), out, "feature-extraction")
    return out


def test_the_export_records_dense_prompts_and_max_seq_length(st_export):
    m = json.loads((st_export / "lookalike.json").read_text())
    st = m["sentence_transformers"]
    assert st["supported"] and st["modules"] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert st["max_seq_length"] == 48 and st["default_prompt_name"] == "query"
    assert st["prompts"]["query"] == "query: " and st["prompts"]["passage"] == "passage: "
    (layer,) = st["dense"]
    assert (layer["in_features"], layer["out_features"], layer["activation"]) == (32, 16, "Tanh")
    assert layer["file"] in m["files"]  # checksummed like every file the runtime reads


def test_auto_equals_sentence_transformers_with_dense_and_prompts(st_model, st_export):
    _, st = st_model
    model = Embedder(st_export, pooling="auto")
    s = model.settings()
    assert (s["pooling"], s["normalize"], s["dense"], s["dim"], s["max_length"], s["prompt"]) == \
        ("mean", True, True, 16, 48, "query: ")
    for kw in ({}, {"prompt_name": "passage"}, {"prompt": ""}, {"prompt": "instruct: "}):
        ref = st.encode(TEXTS, convert_to_numpy=True, **kw)
        got = model.encode(TEXTS, **kw)
        assert got.shape == ref.shape == (len(TEXTS), 16)
        assert (got * ref).sum(1).min() >= 0.9999, kw
    # the default CLS pooling is the graph alone: no Dense, no prompt, the hidden width
    plain = Embedder(st_export)
    assert plain.dim == 32 and plain.settings()["prompt"] == "" and not plain.settings()["dense"]


def test_a_store_records_the_prompt_and_the_dense_modules(st_model, st_export, tmp_path):
    _, st = st_model
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(t for t in TEXTS if t) + "\n")
    r = CliRunner().invoke(cli, ["embed", str(st_export), str(corpus), str(tmp_path / "s"), "--pooling", "auto",
                                 "--prompt-name", "passage"])
    assert r.exit_code == 0, r.output
    store = open_store(tmp_path / "s")
    assert store.config["prompt"] == "passage: " and store.config["prompt_name"] == "passage"
    assert store.config["dense"][0]["out_features"] == 16 and store.config["dense"][0]["sha256"]
    ref = st.encode([t for t in TEXTS if t], prompt_name="passage", convert_to_numpy=True)
    assert (store.embeddings() * ref).sum(1).min() >= 0.9999
    # resuming with another prompt is refused (the store's settings differ), not mixed
    r = CliRunner().invoke(cli, ["embed", str(st_export), str(corpus), str(tmp_path / "s"), "--pooling", "auto"])
    assert r.exit_code == 2 and "prompt" in r.output


def test_bad_prompt_values_are_one_line(st_export, tiny_exports, tmp_path):
    with pytest.raises(InputError, match="no prompt named .doc2.*passage, query"):
        Embedder(st_export, pooling="auto", prompt_name="doc2").encode(["x"])
    with pytest.raises(InputError, match="declares none"):
        Embedder(tiny_exports["bert2"], prompt_name="query").encode(["x"])
    with pytest.raises(InputError, match="not both"):
        Embedder(st_export, pooling="auto", prompt="q: ", prompt_name="query").encode(["x"])
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\ntwo\n")
    r = CliRunner().invoke(cli, ["embed", str(st_export), str(corpus), str(tmp_path / "s"), "--pooling", "auto",
                                 "--tokens", str(tmp_path / "no-cache")])
    assert r.exit_code == 2 and "without the prompt" in r.output


def test_an_edited_dense_file_is_refused(st_export, tmp_path):
    import shutil

    bad = tmp_path / "exp"
    shutil.copytree(st_export, bad)
    m = json.loads((bad / "lookalike.json").read_text())
    f = bad / m["sentence_transformers"]["dense"][0]["file"]
    with np.load(f) as z:
        w = {k: z[k] for k in z.files}
    w["weight"] = w["weight"] * 2
    np.savez(f, **w)
    with pytest.raises(Exception, match="st_dense_0.npz"):
        Embedder(bad, pooling="auto").encode(["x"])


@pytest.mark.parametrize("mode", ["max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", "cls", "mean"])
def test_every_pooling_mode_equals_sentence_transformers(tiny_models, tmp_path, mode):
    """Each of sentence-transformers' pooling modes is a graph output of every export: --pooling auto on a model
    that declares it, and --pooling NAME on any model, equal SentenceTransformer.encode (right-padded batches of
    mixed lengths, empty text included)."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    from lookalike.exporters import export

    torch.manual_seed(0)
    word = models.Transformer(str(tiny_models["bert2"]), max_seq_length=48)
    st = SentenceTransformer(modules=[word, models.Pooling(word.get_word_embedding_dimension(), pooling_mode=mode)],
                             device="cpu")
    st.save(str(tmp_path / "model"))
    m = export(str(tmp_path / "model"), tmp_path / "exp", "feature-extraction")
    name = {"mean_sqrt_len_tokens": "mean_sqrt_len"}.get(mode, mode)
    assert m["sentence_transformers"]["pooling"] == name and m["sentence_transformers"]["supported"]
    ref = st.encode(TEXTS, batch_size=3)
    np.testing.assert_allclose(Embedder(tmp_path / "exp", pooling="auto").encode(TEXTS), ref, atol=2e-5)
    np.testing.assert_allclose(Embedder(tmp_path / "exp", pooling=name, max_length=48).encode(TEXTS), ref, atol=2e-5)


def test_sentence_transformers_conveniences_answer_as_it_does(st_model, st_export):
    """encode_query / encode_document with the model's prompts, similarity, the width, the max length and the
    tokenizer, each equal to SentenceTransformer's own."""
    import torch

    _, st = st_model
    m = Embedder(st_export, pooling="auto")
    texts = [t for t in TEXTS if t]
    np.testing.assert_allclose(m.encode_query(texts), st.encode_query(texts, convert_to_numpy=True), atol=2e-5)
    np.testing.assert_allclose(m.encode_document(texts), st.encode_document(texts, convert_to_numpy=True), atol=2e-5)
    assert m.prompts["query"] == "query: " and m.prompts["passage"] == "passage: "
    a, b = m.encode(texts[:2]), m.encode(texts[1:4])
    np.testing.assert_allclose(m.similarity(a, b), st.similarity(torch.from_numpy(a), torch.from_numpy(b)).numpy(),
                               atol=1e-6)
    assert m.similarity(a[0], torch.from_numpy(b)).shape == (1, 3)
    assert m.get_sentence_embedding_dimension() == st.get_sentence_embedding_dimension() == m.dim
    assert m.max_seq_length == st.max_seq_length == 48
    assert m.tokenizer("a text")["input_ids"] == st.tokenizer("a text")["input_ids"]


def test_token_embeddings_are_sentence_transformers_own(st_model, st_export):
    """output_value="token_embeddings": each text's token vectors, unpadded, equal to SentenceTransformer's (a text
    longer than the max length cut as it cuts it); one text gives one array; tensors on request."""
    import torch

    _, st = st_model
    m = Embedder(st_export, pooling="auto")
    texts = list(TEXTS) + ["word " * 200]
    got = m.encode(texts, output_value="token_embeddings")
    ref = st.encode(texts, output_value="token_embeddings")
    assert [g.shape for g in got] == [tuple(r.shape) for r in ref]
    assert got[-1].shape[0] == 48
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r.numpy(), atol=2e-5)
    one = m.encode(texts[1], output_value="token_embeddings")
    np.testing.assert_allclose(one, got[1], atol=1e-6)
    tensors = m.encode(texts[:2], output_value="token_embeddings", convert_to_tensor=True)
    assert all(isinstance(t, torch.Tensor) for t in tensors)
    with pytest.raises(InputError, match="'sentence_embedding' .* or 'token_embeddings'"):
        m.encode(texts, output_value="tokens")


def test_token_embeddings_check_their_inputs_as_encode_does(st_export):
    m = Embedder(st_export, pooling="auto")
    for bad, needle in (([1, "a"], "text 0 is a int, not a str"), (["a", "b"], "2 texts but 1 pairs")):
        with pytest.raises(InputError, match=needle):
            m.encode(bad, ["x"] if needle.startswith("2") else None, output_value="token_embeddings")
