"""What the integrity checks cost: verifying a store on every read (sha256 + shape of every shard) and hashing
a corpus's whole content for its fingerprint, each against the time the engine takes to make that store.
Writes benchmarks/results/integrity-cpu.json.

    python benchmarks/bench_integrity.py [--rows 100000] [--dim 384]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, save  # noqa: E402


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
    args = ap.parse_args()

    from lookalike.core.store import StoreWriter
    from lookalike.data import CorpusSpec
    from lookalike.data.spec import _content_hash
    from lookalike.engine import embed, open_store
    from lookalike.exporters import export
    from lookalike.models import minilm_path
    from lookalike.params import EmbedParams

    work = Path(tempfile.mkdtemp(prefix="lookalike-integrity-"))
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
    print(results)
    save("integrity-cpu", results)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("LOOKALIKE_CACHE", tempfile.mkdtemp(prefix="lookalike-cache-"))
    main()
