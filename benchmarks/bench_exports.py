"""The packaged MiniLM's export family: file size, parity against PyTorch, and variant parity against fp32.

fp32 (parity enforced; fused, the default, and --no-optimize), int8 per-tensor and per-channel, fp16, and
layers 0,2,4 kept. Results:
benchmarks/results/exports-cpu.json.

    python benchmarks/bench_exports.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import save, work_dir  # noqa: E402

VARIANTS = {"fp32": {}, "fp32 --no-optimize": {"optimize": False}, "int8-per-tensor": {"quantize": "int8"},
            "int8-per-channel": {"quantize": "int8", "per_channel": True}, "fp16": {"fp16": True},
            "layers-0,2,4": {"keep_layers": [0, 2, 4]}}


def main():
    from lookalike.exporters import export
    from lookalike.models import minilm_path

    work = work_dir("lookalike-exports-")
    rows = {}
    for name, kw in VARIANTS.items():
        m = export(str(minilm_path()), work / name.replace(" --", "-"), **kw)
        vp = m.get("variant_parity") or {}
        rows[name] = {"variant": m["variant"]["description"], "size_MB": m["file_size"] / 1e6,
                      "parameters": m["parameters"],
                      "parity_max_abs_diff": m["parity"]["max_abs_diff"],
                      "vs_fp32_mean_cosine_cls": vp.get("mean_cosine_cls"),
                      "vs_fp32_max_abs_diff_cls": vp.get("max_abs_diff_cls")}
        print(name, rows[name], flush=True)
    save("exports-cpu", {"model": "all-MiniLM-L6-v2 (packaged)", "variants": rows})


if __name__ == "__main__":
    main()
