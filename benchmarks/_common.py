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


def work_dir(prefix: str, keep: bool = False) -> Path:
    """A fresh folder under the temp dir for one benchmark's files, removed when the process exits (unless `keep`).

    Benchmarks write exports, stores and corpora by the gigabyte; none of it outlives the run unless asked.
    """
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    if keep:
        print(f"keeping {path}", flush=True)
    else:
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def marked_block(text: str, begin: str, end: str) -> str:
    """The README block a script writes: what lies between its two marker comments."""
    a, b = text.index(begin) + len(begin), text.index(end)
    return text[a:b].strip("\n")


def with_marked_block(text: str, begin: str, end: str, body: str) -> str:
    """`text` with the block between the markers replaced by `body`."""
    a, b = text.index(begin) + len(begin), text.index(end)
    return text[:a] + "\n" + body + "\n" + text[b:]


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


def load_average() -> dict:
    """The machine's load as `uptime` prints it (1, 5 and 15 minute averages) and the CPUs it is shared over."""
    one, five, fifteen = os.getloadavg()
    return {"1min": round(one, 2), "5min": round(five, 2), "15min": round(fifteen, 2), "cpus": os.cpu_count()}


def wait_for_idle(max_load: float, timeout_s: float = 600.0) -> dict:
    """Wait (up to `timeout_s`) until the 1-minute load is below `max_load`; return the load at the start.

    The result says whether the machine was idle (`idle`: load < max_load) so a timing taken on a busy machine is
    recorded as such instead of passing for an idle one.
    """
    deadline = time.monotonic() + timeout_s
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        print(f"waiting for the machine to be idle: load {os.getloadavg()[0]:.2f} >= {max_load}", flush=True)
        time.sleep(15)
    load = load_average()
    return {**load, "max_load": max_load, "idle": load["1min"] < max_load}


def _busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has spent busy since boot (/proc/stat; None off Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class OthersLoad:
    """How busy the rest of the machine was while a block ran: CPUs' worth of work not this process's.

    The load average cannot say it after a run (the run's own work is in it); this can: busy CPU time of the
    whole machine (/proc/stat, hypervisor steal included) minus this process's and its waited-for children's
    (getrusage), over the wall time. A child still running at the end, or a daemon it left (Ray's), counts as
    another process.
    """

    def __enter__(self):
        self.t, self.busy, self.own = time.perf_counter(), _busy_cpu_seconds(), _own_cpu_seconds()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        busy = _busy_cpu_seconds()
        own = _own_cpu_seconds() - self.own
        others = None if busy is None or self.busy is None else max(0.0, busy - self.busy - own) / wall
        self.result = {"wall_s": round(wall, 1), "own_cpus": round(own / wall, 2),
                       "others_cpus": None if others is None else round(others, 2)}


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
              "invoked_as": command, "load_at_save": load_average(), **result}
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
