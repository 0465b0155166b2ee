"""int8 by instruction set: every int8 scheme of the packaged MiniLM timed against fp32 on this CPU, with its
cosine to fp32 (the measurement `lookalike export --quantize int8` makes to choose). Writes
benchmarks/results/int8-<int8 class>.json, one file per kind of CPU it has been measured on.

    python benchmarks/bench_int8.py
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save, work_dir  # noqa: E402


def main():
    os.environ["LOOKALIKE_CACHE"] = str(work_dir("lookalike-int8-"))  # measure, never reuse a choice
    from lookalike.core.cpu import cpu_info
    from lookalike.exporters import export
    from lookalike.models import minilm_path

    work = work_dir("lookalike-int8-")
    m = export(str(minilm_path()), work / "int8", quantize="int8")
    rep = m["int8"]
    name = "int8-" + re.sub(r"[^a-z0-9]+", "-", cpu_info()["int8_class"].lower()).strip("-")
    save(name, {"model": "all-MiniLM-L6-v2 (packaged), fused export", "chosen": rep["scheme"],
                "speedup": rep["speedup"], "cosine": rep["cosine"], "faster_than_fp32": rep["faster_than_fp32"],
                "fp32_tokens_per_s": rep["fp32_tokens_per_s"], "candidates": rep["candidates"],
                "measured": rep["measured"], "min_cosine": rep["min_cosine"]})


if __name__ == "__main__":
    main()
