"""The host side of the engine on real tokenizers: one-pass tokenizing equals transformers' own call, worker processes
give the same ids and the same store bytes, the default batch policy pads little on real text."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import transformers

from lookalike.data import CorpusSpec, Record
from lookalike.engine import embed, open_store
from lookalike.engine.batching import Encoded, TokenizerPool, token_budget_batches, tokenize
from lookalike.engine.plan import window_ranges
from lookalike.params import EmbedParams


def _records(shared_data, n_pairs=120, n_singles=120):
    pairs = list(CorpusSpec(shared_data / "squad2_dev500", limit=n_pairs).records())
    singles = list(CorpusSpec(shared_data / "imdb" / "imdb_test_2k.tsv", limit=n_singles).records())
    mixed = pairs + singles + [Record("empty", ""), Record("empty-pair", "", "")]
    random.Random(0).shuffle(mixed)
    return mixed


@pytest.mark.parametrize("max_length", [16, 128, 512])
def test_one_pass_tokenizing_equals_transformers(minilm_dir, shared_data, max_length):
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    recs = _records(shared_data)
    enc = tokenize(tok, recs, max_length)
    assert len(enc) == len(recs) and enc.truncated.any()
    for i, r in enumerate(recs):
        # a batch call, as the engine always made: an empty pair is still a pair ([CLS] text [SEP] [SEP])
        pair = None if r.text_pair is None else [r.text_pair]
        ref = tok([r.text], pair, truncation=True, max_length=max_length)
        full = tok([r.text], pair, verbose=False)
        assert enc.row(i).tolist() == ref["input_ids"][0], r.id
        assert enc.token_type_ids[i].tolist() == ref["token_type_ids"][0], r.id
        assert bool(enc.truncated[i]) == (len(full["input_ids"][0]) > max_length), r.id


def test_a_rows_ids_do_not_depend_on_its_neighbours(minilm_dir, shared_data):
    # the old chunked call encoded a single text as (text, "") when another row of its chunk had a pair
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    recs = _records(shared_data, 20, 20)
    whole = tokenize(tok, recs, 64)
    for i, r in enumerate(recs):
        assert tokenize(tok, [r], 64).row(0).tolist() == whole.row(i).tolist()


def test_worker_processes_give_the_same_ids(minilm_dir, shared_data):
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    recs = _records(shared_data)
    ref = tokenize(tok, recs, 96)
    with TokenizerPool(tok, 96, workers=2, chunk=17) as pool:
        got = pool.tokenize(recs)
        assert len(pool.tokenize([])) == 0
    for name in ("ids", "offsets", "type_ids", "truncated", "n_tokens"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)


def test_default_policy_pads_little_on_real_text(minilm_dir, shared_data):
    """The default sort window at the GPU batch budget: padding <= 3% on the shared data's real mixed text."""
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    recs = list(CorpusSpec(shared_data / "imdb" / "imdb_test_2k.tsv").records())
    recs += list(CorpusSpec(shared_data / "squad2_dev500").records())
    random.Random(0).shuffle(recs)
    recs = (recs * 5)[:12000]  # more than one default window
    enc = tokenize(tok, recs, 256)
    params = EmbedParams()

    def padding(window):
        real = padded = 0
        for a, b in window_ranges(0, len(enc), window, params.shard_rows):
            for batch in token_budget_batches(enc.slice(a, b), 65536, 0):
                real += batch.real_tokens
                padded += batch.input_ids.size
        return padded / real - 1

    assert padding(params.sort_window) <= 0.03
    assert padding(2048) > padding(params.sort_window)  # the old default padded more


def _benchmark_records(shared_data):
    """The records of benchmarks/_common.real_corpus (2,000): IMDB reviews, SQuAD and CUAD question + context."""
    recs = [Record(f"imdb-{r.id}", r.text) for r in CorpusSpec(shared_data / "imdb" / "imdb_1k.tsv").records()]
    for name in ("squad2_dev500", "cuad500"):
        recs += [Record(f"{name}-{r.id}", f"{r.text} {r.text_pair}") for r in CorpusSpec(shared_data / name).records()]
    return recs


def test_the_padding_minimising_cut_meets_its_numbers_at_any_corpus_size(minilm_dir, shared_data):
    """At the GPU budget the greedy cut padded ~19% on the benchmark records and ~4% on them repeated 20 times (one
    window's longest rows set every batch's width); the dynamic programme cuts the same sorted windows at <= 5%
    and <= 2%."""
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    enc = tokenize(tok, _benchmark_records(shared_data), 256)
    params = EmbedParams()

    def padding(e):
        real = padded = 0
        for a, b in window_ranges(0, len(e), params.sort_window, params.shard_rows):
            for batch in token_budget_batches(e.slice(a, b), 65536, 0):
                assert batch.input_ids.size <= 65536
                real += batch.real_tokens
                padded += batch.input_ids.size
        return padded / real - 1

    assert padding(enc) <= 0.05
    assert padding(Encoded.concat([enc] * 20)) <= 0.02


def test_store_is_byte_identical_with_tokenizing_workers(tiny_exports, shared_data, tmp_path):
    data = CorpusSpec(shared_data / "squad2_dev500", limit=150)
    params = EmbedParams(max_length=96, shard_rows=40, sort_window=30)
    a = embed(tiny_exports["bert2"], data, tmp_path / "inline", params, tokens=False, tokenize_workers=0)
    b = embed(tiny_exports["bert2"], data, tmp_path / "workers", params, tokens=False, tokenize_workers=2)
    assert a["tokenize_workers"] == 0 and b["tokenize_workers"] == 2

    def shas(p):
        return [s["sha256"] for s in json.loads((p / "manifest.json").read_text())["shards"]]

    assert shas(tmp_path / "inline") == shas(tmp_path / "workers")
    assert len(open_store(tmp_path / "workers")) == 150


def test_larger_window_gives_the_same_vectors(tiny_exports, shared_data, tmp_path):
    """Batch composition changes with the window; every row's vector stays the same within float noise."""
    data = CorpusSpec(shared_data / "imdb" / "imdb_test_2k.tsv", limit=120)
    small = EmbedParams(max_length=64, shard_rows=60, sort_window=8, batch_tokens=512)
    big = EmbedParams(max_length=64, shard_rows=60, batch_tokens=512)
    embed(tiny_exports["bert2"], data, tmp_path / "small", small, tokens=False)
    embed(tiny_exports["bert2"], data, tmp_path / "big", big, tokens=False)
    x, y = open_store(tmp_path / "small").embeddings(), open_store(tmp_path / "big").embeddings()
    assert list(open_store(tmp_path / "small").ids) == list(open_store(tmp_path / "big").ids)
    cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    assert cos.min() > 0.99999


def test_the_gpu_fusion_set_passes_parity_on_cpu(tiny_models, tiny_exports, tmp_path):
    """fp16 exports get ORT's CUDA fusion set (SkipLayerNormalization, Attention on a 1-D mask of right-padded
    lengths): checked here on CPU, where those ops run too, against PyTorch and the CPU set's vectors."""
    from lookalike.engine import Embedder
    from lookalike.exporters import export

    gpu = export(str(tiny_models["bert2"]), tmp_path / "gpu", fusions="gpu")
    ops = gpu["variant"]["fused_operators"]
    assert ops.get("Attention") == 2 and ops.get("SkipLayerNormalization", 0) >= 2
    assert gpu["parity"]["passed"] and gpu["variant"]["fusions"] == "gpu"
    texts = ["a great movie", "terrible acting and a long plot that goes nowhere at all", "", "fine"]
    ref = Embedder(tiny_exports["bert2"]).encode(texts)  # the CPU set, as every fp32 export
    np.testing.assert_allclose(Embedder(tmp_path / "gpu").encode(texts), ref, atol=1e-5)
    fp16 = export(str(tiny_models["bert2"]), tmp_path / "fp16", fp16=True)
    assert fp16["variant"]["fusions"] == "gpu" and "GPU set" in fp16["variant"]["description"]
    assert fp16["variant_parity"]["mean_cosine_cls"] >= 0.999
