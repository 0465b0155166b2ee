"""Start-up: the wall time of `lookalike --help`, `lookalike embed --help`, and the fixed cost of `embed` (a
2-row corpus with the packaged MiniLM export), each the median of N fresh processes. The issue's targets on the
2-core machine: help <= 1 s, the fixed cost of embed <= 3 s. Writes benchmarks/results/startup-cpu.json.

    python benchmarks/bench_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save, work_dir  # noqa: E402


def wall(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--code", default=None, help="run lookalike from this checkout instead (e.g. a git worktree of an "
                                                 "older commit, for a before/after in one session)")
    ap.add_argument("--name", default="startup-cpu", help="results file name [startup-cpu]")
    args = ap.parse_args()
    if args.code:
        import os

        os.environ["PYTHONPATH"] = str(Path(args.code).resolve())
    work = work_dir("lookalike-startup-")
    exe = [sys.executable, "-m", "lookalike.cli"]
    subprocess.run(exe + ["-q", "export", "minilm", "m"], cwd=work, check=True, capture_output=True)
    (work / "c.txt").write_text("a great movie\nterrible acting\n")
    runs = {}
    for name, cmd in (("help", ["--help"]), ("embed_help", ["embed", "--help"]),
                      ("embed_2_rows", ["-q", "embed", "m", "c.txt", "OUT"])):
        times = []
        for i in range(args.repeat):
            c = [x.replace("OUT", f"s{i}") for x in cmd]
            times.append(wall(exe + c, work))
        runs[name] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                      "max_s": round(max(times), 3), "repeat": args.repeat}
        print(name, runs[name], flush=True)
    targets = {"help_at_most_1s": runs["help"]["median_s"] <= 1 and runs["embed_help"]["median_s"] <= 1,
               "embed_fixed_cost_at_most_3s": runs["embed_2_rows"]["median_s"] <= 3}
    save(args.name, {"runs": runs, "targets": targets, "code": args.code or "this checkout",
                         "note": "embed loads the export's tokenizer.json with the tokenizers library (no transformers "
                                 "or torch import); fresh processes, page cache warm"})


if __name__ == "__main__":
    main()
