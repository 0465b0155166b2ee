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


def torch_loop(model_dir, texts: list[str], max_length: int, batch_size: int, sort: bool, device: str = "cpu",
               half: bool = False) -> dict:
    """The PyTorch peer: transformers eager, fixed batches (unsorted: the pipeline way; sorted: the
    sentence-transformers way), CLS to host each batch; one warm-up batch untimed."""
    import numpy as np
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval().to(device)
    if half:
        model = model.half()
    order = np.argsort([-len(t) for t in texts]) if sort else np.arange(len(texts))
    real = 0
    with torch.inference_mode():
        model(**tok(texts[:8], padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device))
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(0, len(texts), batch_size):
            batch = [texts[j] for j in order[i:i + batch_size]]
            enc = tok(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
            model(**enc).last_hidden_state[:, 0].float().cpu()
            real += int(enc["attention_mask"].sum())
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"seconds": seconds, "real_tokens": real, "real_tokens_per_s": real / seconds, "batch_size": batch_size,
            "sorted": sort, "fp16": half}


def write_corpus(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def machine() -> dict:
    import numpy
    import onnxruntime

    from lookalike.core.cpu import cpu_info

    cpu = cpu_info()
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu_model": cpu["model"], "isa": cpu["isa"], "int8_class": cpu["int8_class"],
            "processor": platform.processor() or platform.machine(), "numpy": numpy.__version__,
            "onnxruntime": onnxruntime.__version__}


def peak_rss_mb() -> float:
    """This process's peak RSS (MB). Linux: VmHWM, which exec resets; ru_maxrss keeps a forked parent's peak."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
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
