"""Wall time of each test tier (tests/unit, tests/integration, tests/e2e), one after the other, as the README's
table gives them, with each tier's slowest tests (pytest --durations) and the machine's load.

    python benchmarks/bench_test_tiers.py   -> benchmarks/results/test-tiers.json
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OthersLoad, load_average, save, work_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main():
    tiers = {}
    base = work_dir("lookalike-tiers-")
    before = load_average()
    for tier in ("unit", "integration", "e2e"):
        with OthersLoad() as during:
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=15",
                                f"--basetemp={base / tier}", f"tests/{tier}"], cwd=ROOT, capture_output=True, text=True)
            seconds = time.perf_counter() - t0
        lines = r.stdout.strip().splitlines()
        tail = lines[-1]
        counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", tail)}
        slowest = [line.strip() for line in lines if re.match(r"^\d+\.\d+s (call|setup|teardown) ", line.strip())]
        tiers[tier] = {"seconds": round(seconds, 1), "rc": r.returncode, **counts, "summary": tail,
                       "load_during": during.result, "slowest": slowest}
        print(tier, {k: v for k, v in tiers[tier].items() if k != "slowest"}, flush=True)
    save("test-tiers", {"tiers": tiers, "total_seconds": round(sum(t["seconds"] for t in tiers.values()), 1),
                        "load_before": before, "load_after": load_average()})


if __name__ == "__main__":
    main()
