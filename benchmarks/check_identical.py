"""Byte-identity check for refactors: run a fixed set of lookalike jobs and hash every file they write.

    python benchmarks/check_identical.py run  OUT [--no-demo]   # runs in one fixed folder, then moves it to OUT
    python benchmarks/check_identical.py diff BASE NEW [--save NAME]   # what differs; --save: results/NAME.json

The jobs: `lookalike demo` (fine-tuning, exports, stores, kNN, OOD, predictions, scores, attack, report) and a real
corpus run (MiniLM fp32 and int8 exports of 500 IMDB test reviews, self-kNN, a query-bank kNN of 500 SQuAD
questions, deep-kNN OOD against NewsQA, an agreement table, an npy export). Files that carry wall-clock
measurements (latency tables, bench output) differ from run to run by nature; `diff` lists them apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(os.environ.get("LOOKALIKE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
# files whose bytes hold timings or the run's wall clock (checked by eye in `diff`, not by hash)
VOLATILE = ("latency", "bench", "report.md", "report.html", "summary.json", "timings", "run.json", "log")


def lk(*args, env=None):
    cmd = [sys.executable, "-m", "lookalike.cli", "-q", *map(str, args)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    print(f"{time.perf_counter() - t0:6.1f} s  lookalike {' '.join(map(str, args))}", flush=True)


def corpus_jobs(out: Path, env):
    imdb, squad, news = DATA / "imdb" / "imdb_test_2k.tsv", DATA / "squad2_dev500", DATA / "newsqa"
    r = out / "corpus"
    lk("export", "minilm", r / "e32", env=env)
    lk("export", "minilm", r / "e8", "--quantize", "int8", env=env)
    for name in ("e32", "e8"):
        lk("embed", r / name, imdb, r / f"imdb-{name}", "--every", 4, "--max-length", 128, env=env)
        lk("knn", r / f"imdb-{name}", r / f"imdb-{name}.knn.h5", "--k", 10, env=env)
        lk("embed", r / name, DATA / "imdb" / "imdb_train_5k.tsv", r / f"train-{name}", "--every", 10,
           "--max-length", 128, env=env)
        lk("embed", r / name, news / "mrqa_NewsQA_dev_sample.jsonl", r / f"news-{name}", "--max-length", 128,
           "--limit", 300, env=env)
        lk("ood", "--train", r / f"train-{name}", "--test", r / f"news-{name}", "--in-test", r / f"imdb-{name}",
           "--k", "1,5,10", r / f"ood-{name}.json", env=env)
    lk("embed", r / "e32", squad, r / "q-own", "--pooling", "auto", "--max-length", 128, env=env)
    lk("embed", r / "e32", imdb, r / "imdb-own", "--pooling", "auto", "--every", 4, "--max-length", 128, env=env)
    lk("knn", r / "imdb-own", r / "q-vs-imdb.knn.h5", "--queries", r / "q-own", "--k", 10, env=env)
    lk("agree", "--knn", f"fp32={r / 'imdb-e32.knn.h5'}", "--knn", f"int8={r / 'imdb-e8.knn.h5'}",
       "--ood", f"fp32={r / 'ood-e32.json'}", "--ood", f"int8={r / 'ood-e8.json'}", "--k", "1,5,10",
       "--format", "json", "-o", r / "agree", env=env)
    lk("export-store", r / "imdb-e32", r / "imdb-npy", env=env)


def file_hash(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# every run works in this one folder (paths are part of cache keys and records), then moves to OUT
WORK = Path(tempfile.gettempdir()) / "lookalike-identity-work"


def run(out: Path, demo: bool):
    if out.exists() or WORK.exists():
        raise SystemExit(f"{out} or {WORK} exists; give a new OUT (and remove {WORK} after a crashed run)")
    WORK.mkdir(parents=True)
    env = {**os.environ, "LOOKALIKE_CACHE": str(WORK / "cache")}
    corpus_jobs(WORK, env)
    if demo:
        lk("demo", WORK / "demo", env=env)
    hashes = {str(p.relative_to(WORK)): file_hash(p) for p in sorted(WORK.rglob("*"))
              if p.is_file() and not p.is_symlink() and p.name != "hashes.json"}
    (WORK / "hashes.json").write_text(json.dumps(hashes, indent=1, sort_keys=True))
    (WORK / "commit.txt").write_text(os.environ.get("LOOKALIKE_COMMIT", "") + "\n")
    shutil.move(str(WORK), str(out))
    print(f"{len(hashes)} files hashed into {out / 'hashes.json'}")


# files that record when, how long, where or under which cache key something was made (created/finished times,
# seconds, mtimes in the ledger, step keys): compared by eye, not by hash
RECORDS = (".done.json", ".lookalike-files.json", ".lookalike.lock", "lookalike.json", "manifest.json",
           "lookalike-finetune.json", "lookalike-mlm.json", "predict_info.json", "export.json", "int8-choices/")


def _normal(path: str) -> str:
    """A path with the step cache's key suffix taken off (`steps/export/MiniLM-base-5d6c8318bbe1/...` ->
    `steps/export/MiniLM-base/...`): a key holds a fine-tuned folder's mtimes, so it differs run to run."""
    return re.sub(r"(steps/[^/]+/.+?)-[0-9a-f]{12}(?=/)", r"\1", path)


TIMING_KEY = re.compile(r"seconds|_per_s$|^created$|^finished$|^p\d\d_ms$|^spread$|speedup|step_seconds|ms$")
STEP_KEY = re.compile(r"(steps/[^/\"]+/[^/\"]+?)-[0-9a-f]{12}(?=[/\"])")


def _json_content(obj):
    """A JSON value with wall-clock fields dropped and step keys taken out of paths."""
    if isinstance(obj, dict):
        return {k: _json_content(v) for k, v in obj.items() if not TIMING_KEY.search(str(k))}
    if isinstance(obj, list):
        return [_json_content(v) for v in obj]
    if isinstance(obj, str):
        return STEP_KEY.sub(r"\1", obj)
    return obj


def _h5_content(path: Path):
    import h5py
    import numpy as np

    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                value = np.asarray(obj[()])
                out[name] = value.tolist() if value.dtype == object else value.tobytes()
        f.visititems(visit)
        out["attrs"] = {k: str(v) for k, v in f.attrs.items()}
    return out


def _report_content(text: str) -> str:
    """A report without its latency section and provenance line (wall-clock by nature)."""
    text = STEP_KEY.sub(r"\1", text)
    for section in ("## Latency per model", "<h2>Latency per model</h2>"):
        if section in text:
            head, _, tail = text.partition(section)
            nxt = tail.find("\n## ") if section.startswith("#") else tail.find("<h2>")
            text = head + (tail[nxt:] if nxt >= 0 else "")
    return re.sub(r"Generated .*", "", text)


def same_content(a: Path, b: Path) -> bool:
    """Whether two files hold the same results once wall-clock fields and step keys are set aside."""
    if a.suffix == ".h5":
        return _h5_content(a) == _h5_content(b)
    if a.suffix == ".json":
        return _json_content(json.loads(a.read_text())) == _json_content(json.loads(b.read_text()))
    if a.suffix == ".jsonl":
        return [_json_content(json.loads(x)) for x in a.read_text().splitlines()] == \
            [_json_content(json.loads(x)) for x in b.read_text().splitlines()]
    if a.suffix in (".md", ".html", ".csv"):
        return _report_content(a.read_text()) == _report_content(b.read_text())
    return False


def diff(base: Path, new: Path, save_as: str | None = None):
    raw_a, raw_b = json.loads((base / "hashes.json").read_text()), json.loads((new / "hashes.json").read_text())
    where_a, where_b = {_normal(k): k for k in raw_a}, {_normal(k): k for k in raw_b}
    a = {_normal(k): v for k, v in raw_a.items()}
    b = {_normal(k): v for k, v in raw_b.items()}
    missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    content = [k for k in changed if same_content(base / where_a[k], new / where_b[k])]
    records = [k for k in changed if k not in content and any(r in k for r in RECORDS)]
    volatile = [k for k in changed if k not in content and k not in records and any(v in k for v in VOLATILE)]
    hard = [k for k in changed if k not in content and k not in records and k not in volatile]
    same = len(set(a) & set(b)) - len(changed)
    print(f"{len(a)} files in base, {len(b)} in new; byte-identical: {same}; the same results once wall-clock "
          f"fields and step keys are set aside: {len(content)}; other records of times and keys: {len(records)}; "
          f"timing outputs: {len(volatile)}")
    for title, rows in (("only in base", missing), ("only in new", extra), ("DIFFER", hard),
                        ("timing outputs that differ (check by eye)", volatile)):
        if rows:
            print(f"{title} ({len(rows)}):")
            for k in rows:
                print("   ", k)
    if save_as:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _common import save

        save(save_as, {"base": str(base), "new": str(new), "files_base": len(a), "files_new": len(b),
                       "byte_identical": same, "same_content_once_wall_clock_and_step_keys_set_aside": len(content),
                       "records_of_times_and_keys": len(records), "timing_outputs": volatile,
                       "only_in_base": missing, "only_in_new": extra, "differ_in_results": hard,
                       "commits": {"base": _commit(base), "new": _commit(new)}})
    return 1 if (missing or extra or hard) else 0


def _commit(folder: Path) -> str | None:
    p = folder / "commit.txt"
    return p.read_text().strip() if p.exists() else None


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(Path(sys.argv[2]), demo="--no-demo" not in sys.argv)
    else:
        sys.exit(diff(Path(sys.argv[2]), Path(sys.argv[3]),
                      sys.argv[sys.argv.index("--save") + 1] if "--save" in sys.argv else None))
