"""Local engine vs the Ray backend on this machine (the overhead of going through Ray on one node).

Same corpus (the ~2,000 real records of ../shared/data), same int8 MiniLM export, max length 128.
Local: one process, ONNX Runtime with all cores. Ray: a local Ray with 2 CPUs, 2 actors x 1 thread.
Results: benchmarks/results/ray-cpu.json.

    python benchmarks/bench_ray.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from _common import real_corpus, save, work_dir, write_corpus  # noqa: E402


def main():
    from lookalike.data import CorpusSpec
    from lookalike.engine import RayOptions, embed
    from lookalike.exporters import export
    from lookalike.models import minilm_path
    from lookalike.params import EmbedParams

    work = work_dir("lookalike-ray-")
    corpus = write_corpus(real_corpus(), work / "corpus.jsonl")
    export(str(minilm_path()), work / "int8", quantize="int8", per_channel=True)
    spec, params = CorpusSpec(corpus, id_field="id"), EmbedParams(max_length=128, shard_rows=250)
    local = embed(work / "int8", spec, work / "local", params, progress=False)
    print("local", local)
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        ray_stats = embed(work / "int8", spec, work / "ray", params, progress=False, backend="ray",
                          ray=RayOptions(workers=os.cpu_count()))
    finally:
        ray.shutdown()
    print("ray", ray_stats)
    save("ray-cpu", {"local": local, "ray": ray_stats,
                     "ratios": {"ray_vs_local_throughput": ray_stats["rows_per_s"] / local["rows_per_s"]}})


if __name__ == "__main__":
    main()
