"""The token cache: ids exactly the tokenizer's, stores from it byte-identical to stores from text, found by
itself, refused when it does not match, and resumable after kill -9."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import transformers
from click.testing import CliRunner

from lookalike.cli import cli
from lookalike.data import CorpusSpec
from lookalike.engine import embed, open_store
from lookalike.engine.tokens import cache_config, default_location, open_tokens, tokenize_corpus, tokenizer_fingerprint
from lookalike.errors import InputError, StoreError
from lookalike.params import EmbedParams
from support import recorded


def _shas(store):
    return [s["sha256"] for s in recorded(store)["shards"]]


def test_cached_ids_are_the_tokenizers_own(tiny_exports, shared_data, tmp_path):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_exports["bert2"])
    data = CorpusSpec(shared_data / "squad2_dev500", limit=60)  # question + context pairs: token types too
    stats = tokenize_corpus(tok, data, tmp_path / "tc", max_length=128, shard_rows=25, window=16)
    assert stats["rows"] == 60 and stats["n_truncated"] > 0
    cache = open_tokens(tmp_path / "tc")
    rows = list(cache.rows())
    recs = list(data.records())
    assert [r[0] for r in rows] == [r.id for r in recs]
    for (rid, ids, tts, truncated, empty), rec in zip(rows, recs):
        ref = tok(rec.text, rec.text_pair, truncation=True, max_length=128)
        full = tok(rec.text, rec.text_pair)
        assert ids.tolist() == ref["input_ids"] and tts.tolist() == ref["token_type_ids"]
        assert truncated == (len(full["input_ids"]) > 128) and not empty
    assert cache.tokens == sum(len(r[1]) for r in rows)


def test_store_from_cache_is_byte_identical_and_found_by_itself(tiny_exports, shared_data, tmp_path):
    data = CorpusSpec(shared_data / "imdb" / "imdb_test_2k.tsv", limit=90)
    params = EmbedParams(max_length=64, shard_rows=40, sort_window=16)
    text = embed(tiny_exports["bert2"], data, tmp_path / "from-text", params, tokens=False)
    assert text["tokens_from"] is None
    r = CliRunner().invoke(cli, ["tokenize", str(tiny_exports["bert2"]), data.path, "--limit", "90",
                                 "--max-length", "64"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_exports["bert2"])
    assert out["out"] == str(default_location(cache_config(tok, data, 64)))
    # both tiny exports share MiniLM's vocabulary: one cache serves both
    tok4 = transformers.AutoTokenizer.from_pretrained(tiny_exports["bert4"])
    assert tokenizer_fingerprint(tok4) == tokenizer_fingerprint(tok)
    # a tokenizer that has been used (truncation and padding state set by its last call) is the same tokenizer
    tok4(["a b c", "d"], padding=True, truncation=True, max_length=7)
    assert tokenizer_fingerprint(tok4) == tokenizer_fingerprint(tok)
    # ... and one that tokenizes differently is not
    other = transformers.AutoTokenizer.from_pretrained(tiny_exports["bert4"], do_lower_case=False)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tok)
    for name in ("bert2", "bert4"):
        stats = embed(tiny_exports[name], data, tmp_path / f"cached-{name}", params)
        assert stats["tokens_from"] == out["out"], name
    assert _shas(tmp_path / "cached-bert2") == _shas(tmp_path / "from-text")
    ref4 = embed(tiny_exports["bert4"], data, tmp_path / "text-bert4", params, tokens=False)
    assert ref4["rows"] == 90 and _shas(tmp_path / "cached-bert4") == _shas(tmp_path / "text-bert4")
    assert list(open_store(tmp_path / "cached-bert2").ids) == [r.id for r in data.records()]
    # a cache for another max length or another selection of rows is refused when named, ignored when not
    with pytest.raises(InputError, match="max_length"):
        embed(tiny_exports["bert2"], data, tmp_path / "x", EmbedParams(max_length=32), tokens=out["out"])
    with pytest.raises(InputError, match="limit"):
        embed(tiny_exports["bert2"], data.replace(limit=50), tmp_path / "y", params, tokens=out["out"])
    assert embed(tiny_exports["bert2"], data, tmp_path / "z", EmbedParams(max_length=32))["tokens_from"] is None
    # a damaged cache is refused with the repair in the message
    shard = next(iter(sorted(__import__("pathlib").Path(out["out"]).glob("tok-*.h5"))))
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(StoreError, match="re-run `lookalike tokenize`"):
        open_tokens(out["out"])


KILL = textwrap.dedent("""
    import os, signal, sys
    import transformers
    from lookalike.data import CorpusSpec
    from lookalike.core.shards import ShardedWriter
    from lookalike.engine.tokens import tokenize_corpus
    model, corpus, out, when = sys.argv[1:5]
    real = ShardedWriter.record_shard
    def record(self, entry, **kw):
        real(self, entry, **kw)
        if self.shards_done == int(when):
            os.kill(os.getpid(), signal.SIGKILL)
    ShardedWriter.record_shard = record
    tok = transformers.AutoTokenizer.from_pretrained(model)
    tokenize_corpus(tok, CorpusSpec(corpus, limit=200), out, max_length=96, shard_rows=30, window=8)
""")


def test_tokenize_resumes_after_kill_9(tiny_exports, shared_data, tmp_path):
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    data = shared_data / "imdb" / "imdb_1k.tsv"
    proc = subprocess.run([sys.executable, str(script), str(tiny_exports["bert2"]), str(data), str(tmp_path / "k"),
                           "4"], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-500:]
    assert len(recorded(tmp_path / "k")["shards"]) == 4
    tok = transformers.AutoTokenizer.from_pretrained(tiny_exports["bert2"])
    stats = tokenize_corpus(tok, CorpusSpec(data, limit=200), tmp_path / "k", max_length=96, shard_rows=30, window=8)
    assert stats["resumed_from"] == 120 and stats["rows"] == 200
    tokenize_corpus(tok, CorpusSpec(data, limit=200), tmp_path / "clean", max_length=96, shard_rows=30, window=8)
    assert _shas(tmp_path / "k") == _shas(tmp_path / "clean")


def test_classification_predictions_read_a_matching_cache(tiny_exports, shared_data, tmp_path):
    from lookalike.jobs import predict
    from lookalike.params import PredictParams

    data = CorpusSpec(shared_data / "imdb" / "imdb_1k.tsv", limit=60)
    params = PredictParams(max_length=96)
    a = predict(tiny_exports["cls"], data, tmp_path / "text", task="cls", params=params, tokens=False)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_exports["cls"])
    tokenize_corpus(tok, data.for_labels(), tmp_path / "tc", max_length=96, window=16)
    b = predict(tiny_exports["cls"], data, tmp_path / "cached", task="cls", params=params, tokens=tmp_path / "tc")
    assert a["tokens_from"] is None and b["tokens_from"] == str(tmp_path / "tc")
    assert (tmp_path / "text" / "predictions.json").read_bytes() == (tmp_path / "cached" / "predictions.json").read_bytes()
