"""CLS vs mean pooling for deep-kNN OOD with the packaged MiniLM (a mean-pooled sentence-transformer).

The demo's corpora (stdlib docstrings: interleaved 80/20 bank / in-distribution test) against two OOD sets:
stdlib source code and the held-out docstrings rot13-scrambled. Reports AUROC and the number flagged at
TPR 95%, k=10, for each pooling. Results: benchmarks/results/pooling-ood-cpu.json.

    python benchmarks/bench_pooling_ood.py
"""

from __future__ import annotations

import codecs
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import save, work_dir  # noqa: E402


def main():
    from lookalike.analysis.ood import deep_knn_ood
    from lookalike.data import CorpusSpec
    from lookalike.data.stdlib import stdlib_corpora
    from lookalike.demo import write_jsonl
    from lookalike.engine import embed, open_store
    from lookalike.exporters import export
    from lookalike.models import minilm_path
    from lookalike.params import EmbedParams

    work = work_dir("lookalike-pooling-")
    docs, code = stdlib_corpora(1500, 300)
    held = docs[::5]
    sets = {"train": write_jsonl([d for i, d in enumerate(docs) if i % 5], work / "train.jsonl"),
            "in_test": write_jsonl(held, work / "in.jsonl"),
            "code": write_jsonl(code, work / "code.jsonl"),
            "rot13": write_jsonl([{"id": f"rot13:{d['id']}", "text": codecs.encode(d["text"], "rot13")} for d in held],
                                 work / "rot13.jsonl")}
    model = work / "fp32"
    export(str(minilm_path()), model)
    results = {}
    for pooling in ("cls", "mean"):
        stores = {}
        for name, path in sets.items():
            embed(model, CorpusSpec(path, id_field="id"), work / f"{pooling}-{name}",
                  EmbedParams(max_length=256, pooling=pooling), progress=False)
            stores[name] = open_store(work / f"{pooling}-{name}")
        for ood in ("code", "rot13"):
            r = deep_knn_ood(stores["train"], stores[ood], 10, in_test=stores["in_test"])
            results[f"{pooling}/{ood}"] = {"auroc": r.metrics[10]["auroc"], "n_flagged": len(r.ood_ids(10)),
                                           "n_test": len(r.test_ids)}
            print(pooling, ood, results[f"{pooling}/{ood}"], flush=True)
    save("pooling-ood-cpu", {"model": "all-MiniLM-L6-v2 (packaged), fp32", "k": 10, "tpr": 0.95,
                             "n_train": len(docs) - len(held), "n_in_test": len(held), "results": results})


if __name__ == "__main__":
    main()
