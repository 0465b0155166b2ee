"""What bulk users take away from a store: quantised precisions (equal to sentence-transformers'
quantize_embeddings given the same ranges, the ranges fixed once per store and kept on resume), exact Hamming kNN
on binary stores, long documents as overlapping token windows (the tokenizer's own overflow windows, resumed
byte-identically, pooled to one row per record), and the store exported to .npy / Parquet with its ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lookalike.analysis.knn import knn_self
from lookalike.cli import cli
from lookalike.core.precision import quantize
from lookalike.data import CorpusSpec
from lookalike.engine import embed, open_store
from lookalike.engine.chunks import Chunker
from lookalike.errors import InputError, LookalikeError
from lookalike.params import EmbedParams


class Stop(Exception):
    pass


def clean_and_crashed(model, corpus, tmp_path, params, shards: int) -> dict:
    """Embed into clean/ in one go, and into crashed/ stopped after `shards` shards and then resumed; the
    resumed run's stats."""
    embed(model, corpus, tmp_path / "clean", params)

    def crash(n):
        if n == shards:
            raise Stop

    with pytest.raises(Stop):
        embed(model, corpus, tmp_path / "crashed", params, on_shard=crash)
    return embed(model, corpus, tmp_path / "crashed", params)


@pytest.fixture(scope="module")
def reviews(shared_data):
    return CorpusSpec(shared_data / "imdb" / "imdb_test_2k.tsv", limit=120)


@pytest.fixture(scope="module")
def float_store(minilm_export, reviews, tmp_path_factory):
    out = tmp_path_factory.mktemp("float") / "s"
    embed(minilm_export, reviews, out, EmbedParams(pooling="auto", shard_rows=50))
    return open_store(out)


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_quantised_store_equals_sentence_transformers(minilm_export, reviews, float_store, tmp_path, precision):
    from sentence_transformers.quantization import quantize_embeddings

    out = tmp_path / precision
    embed(minilm_export, reviews, out, EmbedParams(pooling="auto", shard_rows=50, dtype=precision,
                                                   calibration_rows=40))
    store = open_store(out)
    ranges = np.asarray(store.config["ranges"], np.float32) if "ranges" in store.config else None
    if precision in ("int8", "uint8"):  # the min/max of the first 40 rows' float vectors, recorded
        np.testing.assert_array_equal(ranges, np.vstack([float_store.embeddings()[:40].min(0),
                                                         float_store.embeddings()[:40].max(0)]))
        assert store.config["ranges_from"] == "the first 40 rows"
    ref = quantize_embeddings(float_store.embeddings(), precision=precision, ranges=ranges)
    got = store.embeddings(raw=True)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    with pytest.raises(LookalikeError, match="codes, not float vectors"):
        store.embeddings()  # codes never pass for vectors


def test_int8_resume_keeps_the_stores_ranges(minilm_export, reviews, tmp_path):
    params = EmbedParams(pooling="auto", shard_rows=50, sort_window=25, dtype="int8", calibration_rows=30)
    clean_and_crashed(minilm_export, reviews, tmp_path, params, 1)
    a, b = open_store(tmp_path / "clean"), open_store(tmp_path / "crashed")
    assert a.config["ranges"] == b.config["ranges"]
    assert [s["sha256"] for s in a.manifest["shards"]] == [s["sha256"] for s in b.manifest["shards"]]


def test_ranges_from_another_store(minilm_export, reviews, shared_data, tmp_path):
    embed(minilm_export, reviews, tmp_path / "a", EmbedParams(pooling="auto", dtype="int8"))
    queries = CorpusSpec(shared_data / "squad2_dev500", limit=20)
    embed(minilm_export, queries, tmp_path / "q", EmbedParams(pooling="auto", dtype="int8",
                                                              ranges_from=str(tmp_path / "a")))
    a, q = open_store(tmp_path / "a"), open_store(tmp_path / "q")
    assert q.config["ranges"] == a.config["ranges"] and str(tmp_path / "a") in q.config["ranges_from"]
    with pytest.raises(InputError, match="pooling"):  # ranges of other features do not fit
        embed(minilm_export, queries, tmp_path / "q2", EmbedParams(pooling="cls", dtype="int8",
                                                                   ranges_from=str(tmp_path / "a")))


def _hamming_knn(bits: np.ndarray, k: int) -> np.ndarray:
    """Brute force: each row's k nearest other rows by Hamming distance, ties by row index."""
    x = np.unpackbits(bits.astype(np.uint8), axis=1).astype(np.int64)
    d = (x[:, None, :] != x[None, :, :]).sum(-1)
    np.fill_diagonal(d, 1 << 30)
    n = len(x)
    return np.array([np.lexsort((np.arange(n), d[i]))[:k] for i in range(n)])


def test_binary_knn_is_exact_hamming(minilm_export, reviews, tmp_path):
    embed(minilm_export, reviews, tmp_path / "b", EmbedParams(pooling="auto", dtype="ubinary", truncate_dim=64))
    store = open_store(tmp_path / "b")
    res = knn_self(store, 7)
    np.testing.assert_array_equal(res.neighbors, _hamming_knn(store.embeddings(raw=True), 7))
    assert res.meta["precision"] == "ubinary" and "hamming" in res.meta["metric"]


def test_quantised_refusals_are_one_line(minilm_export, shared_data, tmp_path):
    corpus = shared_data / "imdb" / "imdb_1k.tsv"
    runner = CliRunner()
    r = runner.invoke(cli, ["embed", str(minilm_export), str(corpus), str(tmp_path / "i8"), "--limit", "20",
                            "--precision", "int8"])
    assert r.exit_code == 0, r.output
    for args, expect in [
        (["knn", str(tmp_path / "i8"), str(tmp_path / "k.h5")], "int8 codes"),
        (["ood", "--train", str(tmp_path / "i8"), "--test", str(tmp_path / "i8"), "--allow-overlap",
          str(tmp_path / "o.json")], "int8 codes"),
        (["embed", str(minilm_export), str(corpus), str(tmp_path / "b"), "--precision", "binary",
          "--truncate-dim", "60"], "multiple of 8"),
        (["embed", str(minilm_export), str(corpus), str(tmp_path / "c"), "--chunk-tokens", "600"],
         "more than the run's max length"),
        (["embed", str(minilm_export), str(corpus), str(tmp_path / "c"), "--chunk-tokens", "10",
          "--chunk-stride", "10"], "must be smaller"),
        (["embed", str(minilm_export), str(corpus), str(tmp_path / "c"), "--precision", "int8",
          "--ranges-from", str(corpus)], "not a .npy"),
    ]:
        r = runner.invoke(cli, args)
        assert r.exit_code != 0 and expect in r.output and "Traceback" not in r.output, (args, r.output)


def test_chunk_windows_are_the_tokenizers_overflow_windows(minilm_dir, minilm_export, shared_data):
    from transformers import AutoTokenizer

    from lookalike.engine.runtime import OnnxModel

    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    chunker = Chunker(OnnxModel(minilm_export).encoder, 50, 12, 256)
    texts = [line.rsplit("\t", 1)[0] for line in
             (shared_data / "imdb" / "imdb_test_2k.tsv").read_text(encoding="utf-8").splitlines()[1:30]]
    from lookalike.data import Record

    for i, text in enumerate(texts):
        ref = tok(text, truncation=True, max_length=52, stride=12, return_overflowing_tokens=True)["input_ids"]
        assert chunker(Record(str(i), text)).windows == ref


def test_chunked_store_resumes_byte_identically_and_pools(minilm_export, reviews, tmp_path):
    params = EmbedParams(pooling="auto", shard_rows=64, sort_window=32, chunk_tokens=48, chunk_stride=8)
    stats = clean_and_crashed(minilm_export, reviews, tmp_path, params, 2)
    assert stats["resumed_from"] == 128
    a, b = open_store(tmp_path / "clean"), open_store(tmp_path / "crashed")
    assert [s["sha256"] for s in a.manifest["shards"]] == [s["sha256"] for s in b.manifest["shards"]]
    assert len(a) > 120 and a.chunked and set(a.parent_ids) == {str(i) for i in range(120)}
    assert all(x == f"{p}#{c}" for x, p, c in zip(a.ids, a.parent_ids, a.chunks))
    assert a.n_tokens.max() <= 50 and not a.truncated.any()
    # one row per record: the mean of its windows, normalised again (the model normalises)
    embed(minilm_export, reviews, tmp_path / "pooled", EmbedParams(pooling="auto", chunk_tokens=48, chunk_stride=8,
                                                                  pool_chunks="mean"))
    pooled = open_store(tmp_path / "pooled")
    assert list(pooled.ids) == [str(i) for i in range(120)] and not pooled.chunked
    x, parents = a.embeddings(), a.parent_ids
    for i in (0, 7, 119):
        mean = x[parents == str(i)].mean(0)
        np.testing.assert_allclose(pooled.embeddings()[i], mean / np.linalg.norm(mean), atol=1e-6)
    assert knn_self(a, 5).neighbors.shape == (len(a), 5)  # knn takes either level


def test_export_store_npy_and_parquet_round_trip(minilm_export, reviews, float_store, tmp_path):
    import pyarrow.parquet as pq

    r = CliRunner().invoke(cli, ["export-store", str(float_store.path), str(tmp_path / "n")])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(tmp_path / "n" / "embeddings.npy"), float_store.embeddings())
    ids = [json.loads(line) for line in (tmp_path / "n" / "ids.jsonl").read_text().splitlines()]
    assert ids == list(float_store.ids)
    embed(minilm_export, reviews, tmp_path / "bits", EmbedParams(pooling="auto", dtype="binary", chunk_tokens=100))
    bits = open_store(tmp_path / "bits")
    r = CliRunner().invoke(cli, ["export-store", str(bits.path), str(tmp_path / "p"), "--format", "parquet"])
    assert r.exit_code == 0, r.output
    t = pq.read_table(tmp_path / "p" / "embeddings.parquet")
    assert t.column("id").to_pylist() == list(bits.ids) and t.column("parent_id").to_pylist() == list(bits.parent_ids)
    np.testing.assert_array_equal(np.array(t.column("embedding").to_pylist(), np.int8), bits.embeddings(raw=True))
    assert json.loads(t.schema.metadata[b"lookalike.store"])["config"]["dtype"] == "binary"
    # a user's file at an output name is never replaced
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "embeddings.npy").write_text("mine")
    r = CliRunner().invoke(cli, ["export-store", str(float_store.path), str(tmp_path / "u")])
    assert r.exit_code != 0 and "not written by lookalike" in r.output
    assert (tmp_path / "u" / "embeddings.npy").read_text() == "mine"


def test_encode_precisions_match_sentence_transformers(minilm_export):
    from sentence_transformers.quantization import quantize_embeddings

    from lookalike import Embedder

    texts = ["a great movie", "terrible acting", "what is the capital of France?", "naïve café"]
    m = Embedder(minilm_export, pooling="auto")
    x = m.encode(texts)
    for p in ("int8", "uint8", "binary", "ubinary"):
        np.testing.assert_array_equal(m.encode(texts, dtype=p), quantize_embeddings(x, precision=p))
    np.testing.assert_array_equal(quantize(x, "binary"), m.encode(texts, dtype="binary"))


@pytest.mark.parametrize("dtype", ["binary", "ubinary"])
def test_write_index_of_a_binary_store_is_a_binary_index(minilm_export, reviews, tmp_path, dtype):
    """--write-index on a binary store writes an IndexBinaryFlat of the packed bits (faiss.read_index_binary),
    whose Hamming search equals brute force over the store's bits; a float index of ±1 vectors it was before."""
    import faiss

    from lookalike.analysis.knn import write_faiss_index

    embed(minilm_export, reviews, tmp_path / "b", EmbedParams(pooling="auto", dtype=dtype, truncate_dim=64))
    store = open_store(tmp_path / "b")
    write_faiss_index(store, tmp_path / "b.faiss", block_rows=7)
    index = faiss.read_index_binary(str(tmp_path / "b.faiss"))
    raw = store.embeddings(raw=True)
    bits = (raw.astype(np.int16) + 128).astype(np.uint8) if dtype == "binary" else raw
    assert isinstance(index, faiss.IndexBinaryFlat) and index.ntotal == len(bits) and index.d == 64
    dist, rows = index.search(bits[:5], 3)
    brute = np.unpackbits(bits[:5, None, :] ^ bits[None, :, :], axis=2).sum(2)
    np.testing.assert_array_equal(dist, np.sort(brute, axis=1)[:, :3])
    assert (rows[:, 0] == np.arange(5)).all() or (dist[:, 0] == 0).all()


def test_exports_load_in_duckdb_pandas_and_faiss_with_their_text(minilm_export, reviews, float_store, tmp_path):
    """Interop as users meet it: the Parquet file in DuckDB (with the cast export.json gives, its array functions
    work) and pandas, the .npy in faiss; --with-text carries each row's source text (a chunked store's rows their
    record's text), and a corpus changed since the embed is refused, naming it."""
    import duckdb
    import faiss
    import pandas as pd
    import shutil

    r = CliRunner().invoke(cli, ["export-store", str(float_store.path), str(tmp_path / "p"), "--format", "parquet",
                                 "--with-text"])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "p" / "export.json").read_text())
    texts = [rec.text for rec in reviews.records()]
    df = pd.read_parquet(tmp_path / "p" / "embeddings.parquet")
    assert df["text"].tolist() == texts and df["id"].tolist() == list(float_store.ids)
    cast = info["duckdb"]
    assert "embedding::FLOAT[384]" in cast
    con = duckdb.connect()
    top = con.sql(f"WITH t AS ({cast}) SELECT id FROM t ORDER BY array_cosine_similarity(embedding, "
                  f"(SELECT embedding FROM t WHERE id = '3')) DESC LIMIT 1").fetchall()
    assert top == [("3",)]
    assert con.sql(f"SELECT count(*) FROM ({cast})").fetchall() == [(120,)]

    r = CliRunner().invoke(cli, ["export-store", str(float_store.path), str(tmp_path / "n"), "--with-text"])
    assert r.exit_code == 0, r.output
    x = np.load(tmp_path / "n" / "embeddings.npy")
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x / np.linalg.norm(x, axis=1, keepdims=True))
    assert index.search(x[:1] / np.linalg.norm(x[:1]), 1)[1][0, 0] == 0
    assert [json.loads(line) for line in (tmp_path / "n" / "texts.jsonl").read_text().splitlines()] == texts

    embed(minilm_export, reviews, tmp_path / "chunks", EmbedParams(pooling="auto", chunk_tokens=100))
    chunks = open_store(tmp_path / "chunks")
    r = CliRunner().invoke(cli, ["export-store", str(chunks.path), str(tmp_path / "c"), "--format", "parquet",
                                 "--with-text"])
    assert r.exit_code == 0, r.output
    t = pd.read_parquet(tmp_path / "c" / "embeddings.parquet")
    by_id = {rec.id: rec.text for rec in reviews.records()}
    assert t["text"].tolist() == [by_id[p] for p in chunks.parent_ids] and len(t) > 120

    copy = tmp_path / "corpus.tsv"  # a store made from a copy, then the copy edited
    shutil.copy(reviews.path, copy)
    embed(minilm_export, reviews.replace(path=str(copy)), tmp_path / "copied", EmbedParams(pooling="auto"))
    copy.write_text(copy.read_text().replace("movie", "film", 1))
    r = CliRunner().invoke(cli, ["export-store", str(tmp_path / "copied"), str(tmp_path / "x"), "--with-text"])
    assert r.exit_code == 2 and "the corpus changed since the store was made" in r.output
    assert str(copy) in r.output and "Traceback" not in r.output


def test_int8_ranges_from_fewer_rows_than_asked_are_said(minilm_export, reviews, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO):
        embed(minilm_export, reviews, tmp_path / "s", EmbedParams(pooling="auto", dtype="int8"))
    said = [r.getMessage() for r in caplog.records]
    assert any("int8 ranges fixed from the 120 rows the corpus has, fewer than the 1000 calibration rows" in m
               for m in said), said
