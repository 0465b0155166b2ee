"""Mutation testing (mutmut 3) of the modules whose arithmetic decides a number: which mutants the tests kill.

A copy of the working tree is made in a temporary folder (the project itself is not touched), mutmut is
configured there to mutate only the modules below and to run the unit tier (the tier mutmut can fork per mutant;
it runs, for each mutant, the tests that reach the mutated function), and its verdicts are read back from the
`.meta` files it writes. A module's score is killed / (killed + survived) over the mutants the tests reach
("no tests" are listed apart: code no unit test calls). Not in CI (minutes of CPU).

    pip install mutmut==3.8.1
    python benchmarks/bench_mutation.py                    # all modules → results/mutation.json
    python benchmarks/bench_mutation.py --module core/precision.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import ROOT, SHARED, save

MODULES = ("engine/batching.py", "analysis/agreement.py", "core/precision.py", "analysis/knn.py", "analysis/search.py",
           "analysis/ood.py")
# mutmut's exit codes (mutmut.stats.status_by_exit_code)
STATUS = {1: "killed", 3: "killed", -24: "timeout", 24: "timeout", 36: "timeout", 0: "survived", 5: "no tests",
          33: "no tests", 34: "skipped", 35: "suspicious", 37: "caught by type check", -11: "segfault",
          -9: "killed (by the OS)", 152: "timeout"}
TARGET = 0.90


def copy_tree(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        if name.startswith("benchmarks/results"):
            continue
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


def collect(work: Path, modules: list[str]) -> dict:
    """Each module's verdicts from mutmut's .meta files in `work`, the survivors with their diffs (read in this
    process: a `mutmut show` per survivor costs a second each)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    here = os.getcwd()
    os.chdir(work)
    try:
        out = {}
        for m in modules:
            meta = json.loads((work / "mutants" / "lookalike" / f"{m}.meta").read_text())
            by = {k: STATUS.get(v, f"exit {v}") for k, v in meta["exit_code_by_key"].items()}
            counts = Counter(by.values())
            caught = counts["killed"] + counts["timeout"]  # a hang is a detection too (mutmut scores it so)
            reached = caught + counts["survived"]
            diffs = {}
            for key in sorted(k for k, v in by.items() if v == "survived"):
                try:
                    text = get_diff_for_mutant(key, path=Path("lookalike") / m)
                except Exception as exc:  # noqa: BLE001 (a diff that cannot be shown is still a survivor)
                    text = f"(no diff: {exc})"
                diffs[key] = [ln for ln in text.splitlines() if ln[:1] in "+-" and not ln.startswith(("---", "+++"))]
            out[m] = {"mutants": len(by), "counts": dict(counts), "reached": reached,
                      "killed_share": round(caught / reached, 4) if reached else None,
                      "meets_target": bool(reached) and caught / reached >= TARGET, "survivors": diffs}
        return out
    finally:
        os.chdir(here)


def run(modules: list[str], workers: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="lookalike-mutation-"))
    try:
        copy_tree(work)
        with open(work / "setup.cfg", "a") as fh:
            fh.write("\n[mutmut]\nsource_paths = lookalike/\n"
                     "only_mutate =\n" + "".join(f"    lookalike/{m}\n" for m in modules) +
                     "pytest_add_cli_args_test_selection = tests/unit\n"
                     "pytest_add_cli_args = -p no:cacheprovider -q\n"
                     "timeout_multiplier = 5.0\n")  # a mutant that hangs the tests is caught in seconds
        # one thread per test process: the timeout is CPU time, which spinning OpenMP threads would inflate into
        # false "timeouts" (detections that are not)
        env = {**os.environ, "LOOKALIKE_SHARED_DATA": str(SHARED), "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(workers)], cwd=work,
                           env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"mutmut failed ({r.returncode}): {(r.stdout + r.stderr)[-3000:]}")
        out = collect(work, modules)
        return {"seconds": round(seconds, 1), "modules": out}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", action="append", choices=MODULES)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--collect", type=Path, default=None,
                    help="read the verdicts of a finished run's copy (its folder) instead of running mutmut")
    args = ap.parse_args()
    modules = args.module or list(MODULES)
    if args.collect:
        result = {"seconds": None, "modules": collect(args.collect.resolve(), modules)}
    else:
        result = run(modules, args.workers)
    for m, r in result["modules"].items():
        print(f"{m}: {r['counts']} killed {r['killed_share']}")
    import mutmut

    from _common import RESULTS

    earlier = RESULTS / "mutation.json"
    modules_out = result["modules"]
    if args.module and earlier.exists():  # a run of some modules updates theirs and keeps the others'
        kept = json.loads(earlier.read_text()).get("modules", {})
        modules_out = {**kept, **{m: {**r, "run_seconds": result["seconds"]} for m, r in modules_out.items()}}
    summary = {m: {"killed_share": r["killed_share"], "meets_target": r["meets_target"], "counts": r["counts"]}
               for m, r in modules_out.items()}
    save("mutation", {"tool": f"mutmut {mutmut.__version__}", "tests": "tests/unit (forked per mutant)",
                      "target": f">= {TARGET:.0%} of reached mutants killed per module (timeouts count as killed)",
                      "summary": summary, "seconds": result["seconds"], "modules": modules_out})


if __name__ == "__main__":
    main()
