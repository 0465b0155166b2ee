"""Wall time of each test tier (tests/unit, tests/integration, tests/e2e), one after the other, as the README's
table gives them.

    python benchmarks/bench_test_tiers.py   -> benchmarks/results/test-tiers.json
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import save, work_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main():
    tiers = {}
    base = work_dir("lookalike-tiers-")
    for tier in ("unit", "integration", "e2e"):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={base / tier}",
                            f"tests/{tier}"], cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        tail = r.stdout.strip().splitlines()[-1]
        counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", tail)}
        tiers[tier] = {"seconds": round(seconds, 1), "rc": r.returncode, **counts, "summary": tail}
        print(tier, tiers[tier])
    save("test-tiers", {"tiers": tiers, "total_seconds": round(sum(t["seconds"] for t in tiers.values()), 1)})


if __name__ == "__main__":
    main()
