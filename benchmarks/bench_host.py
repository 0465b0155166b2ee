"""Host ceiling: the engine's whole pipeline with the model taken out, so what is left is everything a device
would wait on (read -> tokenize or read the token cache -> batch -> write the store).

A null model answers every batch with zeros at once. Measured in one run on the same corpus: the real fp32
engine (the rate a CPU device reaches), the null pipeline from text (Rust tokenizer parallel, its default, and
serial), tokenizing into a token cache, and the null pipeline from the cache. The issue's target: from the cache
>= 20x the fp32 engine rate here, so the host never limits a device. Writes benchmarks/results/host-cpu.json.

    python benchmarks/bench_host.py [--limit N] [--max-length 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, save, work_dir, write_corpus  # noqa: E402


class NullModel:
    """The engine's model interface with inference removed: batches in, zero vectors out."""

    def __init__(self, real):
        self.dir, self.manifest, self.encoder = real.dir, real.manifest, real.encoder
        self.pad_id, self.hidden_size, self.max_positions = real.pad_id, real.hidden_size, real.max_positions
        self.output_names, self.device, self.io_binding = real.output_names, "cpu", False
        self.vocab_size = real.vocab_size

    def run(self, outputs, input_ids, attention_mask, token_type_ids=None):
        return [np.zeros((len(input_ids), self.hidden_size), dtype=np.float32)]


def corpus_rows(limit: int | None) -> list[dict]:
    """Every text of ../shared/data: IMDB train + test samples, SQuAD v2 dev half and NewsQA dev as pairs."""
    from lookalike.data import read_corpus

    rows = []
    for name in ("imdb/imdb_train_5k.tsv", "imdb/imdb_test_2k.tsv"):
        rows += [{"id": f"{name}:{r.id}", "text": r.text} for r in read_corpus(SHARED / name)]
    for name in ("squad2/cs224n-dev-v2.0.json", "newsqa/newsqa_dev_robustqa.json"):
        rows += [{"id": f"{name}:{r.id}", "text": r.text, "pair": r.text_pair} for r in read_corpus(SHARED / name)]
    rng = np.random.default_rng(0)  # interleave the sources, deterministic
    rows = [rows[i] for i in rng.permutation(len(rows))]
    return rows[:limit] if limit else rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="records (default: all ~17k)")
    ap.add_argument("--engine-limit", type=int, default=2000, help="records for the real fp32 engine run")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--workers", default=None, help="tokenize_workers values to run from text [1,2,cores]")
    ap.add_argument("--skip-engine", action="store_true", help="no real fp32 engine run (ratios to it are omitted)")
    args = ap.parse_args()

    import transformers

    from lookalike.data import CorpusSpec
    from lookalike.engine import OnnxModel, embed, open_store
    from lookalike.engine.tokens import tokenize_corpus
    from lookalike.exporters import export
    from lookalike.models import minilm_path
    from lookalike.params import EmbedParams

    work = work_dir("lookalike-host-")
    os.environ["LOOKALIKE_CACHE"] = str(work / "cache")  # never read a user's shared caches here
    rows = corpus_rows(args.limit)
    export(str(minilm_path()), work / "fp32")
    real = OnnxModel(work / "fp32", device="cpu")
    null = NullModel(real)
    params = EmbedParams(max_length=args.max_length)
    runs = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        runs[name] = {"seconds": round(time.perf_counter() - t, 3), **(out or {})}
        print(name, runs[name], flush=True)

    # QA corpora hold question + context pairs: read them as pairs, as the engine does for SQuAD
    pairs = [r for r in rows if "pair" in r]
    singles = [r for r in rows if "pair" not in r]
    pair_path = write_corpus(pairs, work / "pairs.jsonl")
    single_path = write_corpus(singles, work / "singles.jsonl")
    specs = {"singles": CorpusSpec(single_path), "pairs": CorpusSpec(pair_path, pair_field="pair")}

    def null_embed(name, spec, tokens, workers=0):
        out = work / f"store-{name}"
        shutil.rmtree(out, ignore_errors=True)
        stats = embed(real.dir, spec, out, params, model=null, progress=False, tokens=tokens,
                      tokenize_workers=workers)
        return {"rows": stats["rows"], "real_tokens": int(open_store(out).n_tokens.sum()),
                "padding_overhead": stats["padding_overhead"],
                "shas": [s["sha256"] for s in open_store(out).manifest["shards"]]}

    def both(name, tokens_of, workers=0):
        def go():
            a = null_embed(f"{name}-singles", specs["singles"], tokens_of("singles"), workers)
            b = null_embed(f"{name}-pairs", specs["pairs"], tokens_of("pairs"), workers)
            shas[name] = a.pop("shas") + b.pop("shas")
            return {"rows": a["rows"] + b["rows"], "real_tokens": a["real_tokens"] + b["real_tokens"],
                    "tokenize_workers": workers}
        return go

    shas: dict = {}

    # the real fp32 engine on a subset (its rate is what a CPU device reaches)
    sub = CorpusSpec(single_path, limit=args.engine_limit)
    if not args.skip_engine:
        timed("engine_fp32", lambda: (lambda s: {"rows": s["rows"], "engine_seconds": s["seconds"],
                                             "real_tokens": int(open_store(work / "store-engine").n_tokens.sum())})(
        embed(real.dir, sub, work / "store-engine", params, model=real, progress=False, tokens=False)))
    timed("null_from_text", both("text", lambda k: False))
    from lookalike.core.session import physical_cores

    for n in (int(x) for x in (args.workers or f"1,2,{physical_cores()}").split(",")):
        if f"null_from_text_workers_{n}" not in runs:
            timed(f"null_from_text_workers_{n}", both(f"text-w{n}", lambda k: False, n))
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    timed("null_from_text_serial_tokenizer", both("text-serial", lambda k: False))
    del os.environ["TOKENIZERS_PARALLELISM"]
    tok = transformers.AutoTokenizer.from_pretrained(work / "fp32")
    caches = {}

    def tokenize_all():
        n = 0
        for k, s in specs.items():
            r = tokenize_corpus(tok, s, work / f"tokens-{k}", max_length=args.max_length)
            caches[k] = r["out"]
            n += r["tokens_this_run"]
        return {"real_tokens": n}

    timed("tokenize_to_cache", tokenize_all)
    timed("null_from_cache", both("cache", lambda k: caches[k]))
    for name, r in runs.items():
        secs = r.get("engine_seconds", r["seconds"])
        r["real_tokens_per_s"] = r["real_tokens"] / secs if secs else None
    ratios = {}
    if "engine_fp32" in runs:
        eng = runs["engine_fp32"]["real_tokens_per_s"]
        ratios = {f"{k}_vs_engine_fp32": runs[k]["real_tokens_per_s"] / eng for k in runs if k != "engine_fp32"}
        ratios["target_cache_at_least_20x"] = ratios["null_from_cache_vs_engine_fp32"] >= 20
    text = runs["null_from_text"]["real_tokens_per_s"]
    ratios.update({f"{k}_vs_null_from_text": runs[k]["real_tokens_per_s"] / text
                   for k in runs if k.startswith("null_from_text_workers")})
    # every way of feeding the engine makes the same store
    same = {k: v == shas["text"] for k, v in shas.items()}
    print(ratios, same)
    save("host-cpu", {"records": len(rows), "max_length": args.max_length, "model": "all-MiniLM-L6-v2 (packaged)",
                      "null_model": "answers every batch with zeros: the pipeline without inference",
                      "sort_window": params.sort_window, "shard_rows": params.shard_rows,
                      "runs": runs, "ratios": ratios, "stores_identical_to_text_inline": same})


if __name__ == "__main__":
    main()
