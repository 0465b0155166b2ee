"""Disk use of `lookalike demo`'s output folder, by step, and the run's wall time (the README's "On disk" line).

    python benchmarks/bench_demo_disk.py [--docs 1200]   -> benchmarks/results/demo-disk.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import save, work_dir  # noqa: E402


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=None, help="demo --docs [the demo's default]")
    args = ap.parse_args()
    work = work_dir("lookalike-demo-disk-")
    cmd = [sys.executable, "-m", "lookalike.cli", "-q", "demo", str(work / "demo")]
    if args.docs:
        cmd += ["--docs", str(args.docs)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**__import__("os").environ, "LOOKALIKE_CACHE": str(work / "cache")})
    seconds = time.perf_counter() - t0
    demo = work / "demo"
    by_step = {p.name: folder_bytes(p) for p in sorted((demo / "steps").iterdir()) if p.is_dir()}
    result = {"seconds": round(seconds, 1), "total_bytes": folder_bytes(demo), "by_step_bytes": by_step,
              "onnx_exports": len(list(demo.rglob("model.onnx"))), "docs": args.docs or "default"}
    print(result)
    save("demo-disk", result)


if __name__ == "__main__":
    main()
