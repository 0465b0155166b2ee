"""What the integrity checks cost: verifying a store on every read (sha256 + shape of every shard) and hashing
a corpus's whole content for its fingerprint, each against the time the engine takes to make that store; and
the guards of trust round three, each against the work it guards, in the same run: re-claiming a lookalike file
(the ledger's sha256), the bounded line reader against plain iteration, the exact long-text cut against
tokenizing the whole text, a token cache's spot check against tokenizing the corpus, and the exact self-kNN on
identical vectors against distinct ones. Writes benchmarks/results/integrity-cpu.json.

    python benchmarks/bench_integrity.py [--rows 100000] [--dim 384] [--knn-rows 20000]
    python benchmarks/bench_integrity.py --only-knn --knn-rows 100000   # -> integrity-knn-cpu.json
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
from _common import SHARED, save, work_dir  # noqa: E402


def best(fn, repeat=3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--knn-rows", type=int, default=20_000)
    ap.add_argument("--only-knn", action="store_true",
                    help="only the kNN duplicates measurement, into integrity-knn-cpu.json (e.g. --knn-rows 100000)")
    args = ap.parse_args()
    if args.only_knn:
        save("integrity-knn-cpu", {"knn_duplicates": knn_duplicates(args.knn_rows, args.dim)})
        return

    from lookalike.core.store import StoreWriter
    from lookalike.data import CorpusSpec
    from lookalike.data.spec import _content_hash
    from lookalike.engine import embed, open_store
    from lookalike.exporters import export
    from lookalike.models import minilm_path
    from lookalike.params import EmbedParams

    work = work_dir("lookalike-integrity-")
    rng = np.random.default_rng(0)
    # a store of the size the engine writes for `rows` records (10 shards of 10,000)
    with StoreWriter(work / "store", {"model_sha256": "x", "pooling": "cls", "max_length": 256, "dtype": "float32",
                                      "normalize": False}, args.dim, 10_000) as w:
        for start in range(0, args.rows, 10_000):
            n = min(10_000, args.rows - start)
            w.append([str(i) for i in range(start, start + n)], rng.standard_normal((n, args.dim), dtype=np.float32),
                     np.full(n, 128), np.zeros(n, bool))
        w.finalize()
    store_bytes = sum(p.stat().st_size for p in (work / "store").glob("part-*.h5"))
    verify = best(lambda: open_store(work / "store", verify=True))
    no_verify = best(lambda: open_store(work / "store", verify=False))
    load_all = best(lambda: open_store(work / "store", verify=False).embeddings(), repeat=2)

    # the engine's rate on real text, to put the checks next to the time that made the store
    export(str(minilm_path()), work / "fp32")
    sample = CorpusSpec(SHARED / "imdb" / "imdb_test_2k.tsv", limit=500)
    s = embed(work / "fp32", sample, work / "real", EmbedParams(max_length=256), progress=False, tokens=False)
    engine_rows_per_s = s["rows_per_s"]
    embed_seconds = args.rows / engine_rows_per_s

    # corpus fingerprint: the whole content, streamed (cached per size/mtime/inode, so time it uncached)
    corpus = work / "corpus.tsv"
    text = (SHARED / "imdb" / "imdb_train_5k.tsv").read_bytes()
    with open(corpus, "wb") as fh:
        for _ in range(16):  # ~106 MB
            fh.write(text)
    size = corpus.stat().st_size

    def fingerprint():
        _content_hash.cache_clear()
        CorpusSpec(corpus).fingerprint()

    fp_seconds = best(fingerprint)

    # the model file's sha256, checked when an export is loaded (uncached: the in-process cache cleared)
    from lookalike.core import manifest as export_manifest

    m = export_manifest.load_manifest(work / "fp32")

    def verify_model():
        export_manifest._VERIFIED.clear()
        export_manifest.verify_model_file(work / "fp32", m)

    model_verify = best(verify_model)
    model_bytes = (work / "fp32" / m["file"]).stat().st_size

    # a neighbour file of the store's size: its content checksum and range checks on load
    import h5py

    from lookalike.analysis.knn import KnnResult, load_knn

    n = args.rows
    knn = KnnResult(np.array([str(i) for i in range(n)], dtype=object), rng.integers(0, n, (n, 10)),
                    rng.random((n, 10), dtype=np.float32), 10)
    knn.save(work / "k.h5")
    knn_checked = best(lambda: load_knn(work / "k.h5"))
    shutil.copyfile(work / "k.h5", work / "k-old.h5")
    with h5py.File(work / "k-old.h5", "r+") as f:
        del f.attrs["content_sha256"]
    import logging

    logging.getLogger("lookalike").setLevel(logging.ERROR)  # the older-file warning, on purpose here
    knn_unchecked = best(lambda: load_knn(work / "k-old.h5"))
    corpus_rows = 16 * 5000
    corpus_embed_seconds = corpus_rows / engine_rows_per_s
    results = {
        "store": {"rows": args.rows, "dim": args.dim, "bytes": store_bytes,
                  "open_verify_seconds": round(verify, 4), "shard_files": len(list((work / "store").glob("part-*.h5"))),
                  "open_no_verify_seconds": round(no_verify, 4),
                  "verify_gb_per_s": store_bytes / (verify - no_verify) / 1e9 if verify > no_verify else None,
                  "load_all_vectors_seconds": round(load_all, 4),
                  "engine_rows_per_s_fp32_minilm_256": round(engine_rows_per_s, 2),
                  "engine_seconds_to_make_it": round(embed_seconds, 1),
                  "verify_fraction_of_embed_time": verify / embed_seconds,
                  "verify_vs_loading_the_vectors": verify / load_all},
        "model_file": {"bytes": model_bytes, "verify_seconds": round(model_verify, 4),
                       "gb_per_s": model_bytes / model_verify / 1e9},
        "neighbour_file": {"rows": n, "k": 10, "load_checked_seconds": round(knn_checked, 4),
                           "load_without_checksum_seconds": round(knn_unchecked, 4),
                           "checksum_seconds": round(knn_checked - knn_unchecked, 4)},
        "corpus_refingerprint_at_end": "one more fingerprint pass per embed run (the 'fingerprint' row)",
        "fingerprint": {"corpus_bytes": size, "seconds": round(fp_seconds, 3), "gb_per_s": size / fp_seconds / 1e9,
                        "records": corpus_rows, "engine_seconds_to_embed_it": round(corpus_embed_seconds, 1),
                        "fraction_of_embed_time": fp_seconds / corpus_embed_seconds},
    }
    results["round_three"] = round_three(work, corpus, corpus_rows, store_bytes, args)
    print(results)
    save("integrity-cpu", results)


def knn_duplicates(n: int, dim: int) -> dict:
    """Exact self-kNN (k=10) over n distinct, n identical and n with a third identical vectors."""
    from lookalike.analysis.knn import knn_self_exact

    rng = np.random.default_rng(1)
    distinct = rng.standard_normal((n, dim)).astype(np.float32)
    distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
    identical = np.repeat(distinct[:1], n, axis=0)
    mixed = distinct.copy()
    mixed[: n // 3] = distinct[0]  # a third of the corpus one empty text
    t_distinct = best(lambda: knn_self_exact(distinct, 10), repeat=1)
    t_identical = best(lambda: knn_self_exact(identical, 10), repeat=1)
    t_mixed = best(lambda: knn_self_exact(mixed, 10), repeat=1)
    return {"rows": n, "dim": dim, "k": 10, "distinct_seconds": round(t_distinct, 3),
            "identical_seconds": round(t_identical, 3), "one_third_identical_seconds": round(t_mixed, 3),
            "identical_vs_distinct": t_identical / t_distinct, "one_third_identical_vs_distinct": t_mixed / t_distinct}


def round_three(work: Path, corpus: Path, corpus_rows: int, store_bytes: int, args) -> dict:
    """The guards added in trust round three, each timed against the work it guards."""
    from tokenizers import Tokenizer

    from lookalike.data import CorpusSpec, read_corpus
    from lookalike.data.opener import read_lines
    from lookalike.engine.cut import cut_long
    from lookalike.engine.tokens import export_tokenizer, open_tokens, spot_check, tokenize_corpus
    from lookalike.models import minilm_path
    from lookalike.outputs import OwnedFolder

    out = {}
    # 1. the ledger: re-claiming a lookalike file hashes it (is it still what lookalike wrote?)
    folder = OwnedFolder(work / "owned")
    with folder.writing("big.bin") as tmp:
        with open(tmp, "wb") as fh:
            for _ in range(store_bytes >> 24):
                fh.write(os.urandom(1 << 24))
    big = (work / "owned" / "big.bin").stat().st_size
    claim = best(lambda: folder.claim("big.bin"))
    out["ledger_reclaim"] = {"bytes": big, "seconds": round(claim, 4), "gb_per_s": big / claim / 1e9,
                             "note": "paid once per command that rewrites an existing lookalike file (--overwrite, "
                                     "a re-run): the file is hashed to prove it is still lookalike's"}

    # 2. the bounded line reader against plain iteration, and the whole reader for context
    size = corpus.stat().st_size

    def plain():
        with open(corpus, "rb") as fh:
            for _ in fh:
                pass

    def bounded():
        for _ in read_lines(corpus):
            pass

    t_plain, t_bounded = best(plain), best(bounded)
    t_records = best(lambda: sum(1 for _ in read_corpus(corpus)), repeat=1)
    out["bounded_lines"] = {"bytes": size, "plain_iteration_seconds": round(t_plain, 4),
                            "read_lines_seconds": round(t_bounded, 4), "ratio": t_bounded / t_plain,
                            "read_corpus_records": corpus_rows, "read_corpus_seconds": round(t_records, 3),
                            "read_lines_fraction_of_read_corpus": t_bounded / t_records}

    # 3. the exact long-text cut: no-op scan on ordinary texts, and long texts cut against tokenized whole
    tok = Tokenizer.from_file(str(Path(minilm_path()) / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256, stride=0, strategy="longest_first", direction="right")
    reviews = [r.text for r in read_corpus(SHARED / "imdb" / "imdb_test_2k.tsv")]
    t_enc = best(lambda: tok.encode_batch(reviews, add_special_tokens=True))
    t_cut_enc = best(lambda: tok.encode_batch(cut_long(tok, reviews), add_special_tokens=True))
    long_texts = [" ".join(reviews[i:i + 150]) for i in range(0, 1500, 150)]  # 10 texts of ~200k characters
    t_long_full = best(lambda: tok.encode_batch(long_texts, add_special_tokens=True), repeat=2)
    t_long_cut = best(lambda: tok.encode_batch(cut_long(tok, long_texts), add_special_tokens=True), repeat=2)
    same = [e.ids for e in tok.encode_batch(long_texts)] == [e.ids for e in tok.encode_batch(cut_long(tok, long_texts))]
    out["long_text_cut"] = {
        "ordinary_texts": len(reviews), "encode_seconds": round(t_enc, 4), "encode_with_cut_seconds": round(t_cut_enc, 4),
        "overhead_ratio": t_cut_enc / t_enc,
        "long_texts": len(long_texts), "long_text_chars_mean": int(np.mean([len(t) for t in long_texts])),
        "long_encode_whole_seconds": round(t_long_full, 4), "long_encode_cut_seconds": round(t_long_cut, 4),
        "long_speedup": t_long_full / t_long_cut, "same_ids": same}

    # 4. the token cache's spot check (32 rows tokenized again, the corpus read to its last row) against
    #    tokenizing the corpus (what the cache saves)
    export_dir = work / "fp32"
    tokenizer, _ = export_tokenizer(export_dir, 256)
    spec = CorpusSpec(corpus)
    t0 = time.perf_counter()
    made = tokenize_corpus(tokenizer, spec, work / "tokens", max_length=256, progress=False)
    t_tokenize = time.perf_counter() - t0
    cache = open_tokens(work / "tokens")
    t_spot = best(lambda: spot_check(cache, tokenizer, spec, 256), repeat=2)
    out["token_cache_spot_check"] = {"rows": made.get("rows"), "tokenize_seconds": round(t_tokenize, 2),
                                     "spot_check_seconds": round(t_spot, 3),
                                     "fraction_of_tokenizing": t_spot / t_tokenize}

    # 5. exact self-kNN: identical vectors against distinct ones (the duplicate path searches each copy once)
    out["knn_duplicates"] = knn_duplicates(args.knn_rows, args.dim)
    return out


if __name__ == "__main__":
    os.environ.setdefault("LOOKALIKE_CACHE", str(work_dir("lookalike-cache-")))
    main()
