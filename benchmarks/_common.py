"""Shared helpers for the benchmark scripts: the real-text corpus, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOOKALIKE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"


def real_corpus(limit: int | None = None) -> list[dict]:
    """The ~2,000 real records of ../shared/data as single texts: IMDB reviews, SQuAD and CUAD question+context."""
    from lookalike.data import read_corpus

    rows = []
    for r in read_corpus(SHARED / "imdb" / "imdb_1k.tsv"):
        rows.append({"id": f"imdb-{r.id}", "text": r.text})
    for name in ("squad2_dev500", "cuad500"):
        for r in read_corpus(SHARED / name):
            rows.append({"id": f"{name}-{r.id}", "text": f"{r.text} {r.text_pair}"})
    return rows[:limit] if limit else rows


def write_corpus(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def machine() -> dict:
    import numpy
    import onnxruntime

    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "numpy": numpy.__version__,
            "onnxruntime": onnxruntime.__version__}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
              **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path


class Timer:
    def __enter__(self):
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t
