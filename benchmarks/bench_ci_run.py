"""`.ci/run` exactly as CI runs it: a fresh clone of the committed HEAD, install + the README's test command.

With `--busy` a busy loop holds one core the whole time (CI's machine is shared and can be slow: the suite must
stay green and well under its 15 minutes there). Records the wall time, the pytest summary, and the load before,
during (other processes' CPUs) and after.

    python benchmarks/bench_ci_run.py --busy      -> benchmarks/results/ci-run-busy.json
    python benchmarks/bench_ci_run.py             -> benchmarks/results/ci-run.json

`.ci/run` installs the clone in editable mode; this script re-installs this checkout (`--no-deps`) at the end.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, SHARED, OthersLoad, load_average, save, wait_for_idle, work_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--busy", action="store_true", help="hold one core with a busy loop for the whole run")
    ap.add_argument("--max-load", type=float, default=None, help="wait for the 1-minute load to fall below this")
    args = ap.parse_args()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    work = work_dir("lookalike-ci-")
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (work / "shared").symlink_to(SHARED.parent)  # .ci/run's ../shared, as on CI
    before = wait_for_idle(args.max_load) if args.max_load else load_average()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    log = work / "ci.log"
    try:
        with OthersLoad() as during, open(log, "w") as out:
            t = time.perf_counter()
            rc = subprocess.run(["bash", ".ci/run"], cwd=clone, stdout=out, stderr=subprocess.STDOUT).returncode
            seconds = time.perf_counter() - t
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(ROOT), "--no-deps"],
                       capture_output=True)
    text = log.read_text(errors="replace")
    summary = next((line for line in reversed(text.splitlines()) if re.search(r"\d+ (passed|failed)", line)), "")
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", summary)}
    print(text[-3000:] if rc else summary)
    save("ci-run-busy" if args.busy else "ci-run",
         {"commit": head, "busy_loop_on_one_core": args.busy, "rc": rc, "seconds": round(seconds, 1),
          "summary": summary, **counts, "load_before": before, "load_during": during.result,
          "load_after": load_average(), "log_tail": text[-2000:] if rc else ""})
    raise SystemExit(rc)


if __name__ == "__main__":
    main()
