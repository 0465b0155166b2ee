"""`lookalike demo`: the whole comparison offline, on what every install has.

The "large" model is the packaged all-MiniLM-L6-v2 (6 layers); its compressed family is made here:
dynamic int8 (per-channel), fp16, and layer-dropped to 3 and 2 layers. The corpus is real English prose
that needs no download: the docstrings of the Python standard library (in-distribution), with source code
of the same library as the out-of-distribution challenge set.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from pathlib import Path

STDLIB_MODULES = [
    "argparse", "asyncio", "base64", "bisect", "calendar", "codecs", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "doctest",
    "email", "email.message", "enum", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt",
    "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser", "http.client", "http.cookies",
    "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging",
    "logging.handlers", "lzma", "mailbox", "mimetypes", "multiprocessing", "numbers", "operator", "optparse",
    "os", "pathlib", "pdb", "pickle", "pkgutil", "platform", "plistlib", "poplib", "pprint", "pydoc", "queue",
    "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal",
    "smtplib", "socket", "socketserver", "sqlite3", "ssl", "statistics", "string", "struct", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace", "traceback", "types",
    "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref",
    "xml.dom.minidom", "xml.etree.ElementTree", "xmlrpc.client", "zipfile", "zoneinfo",
]


def _members(mod):
    yield mod.__name__, mod
    for name, obj in sorted(vars(mod).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield f"{mod.__name__}.{name}", obj
            if inspect.isclass(obj):
                for mname, m in sorted(vars(obj).items()):
                    if not mname.startswith("_") and inspect.isfunction(m):
                        yield f"{mod.__name__}.{name}.{mname}", m


def stdlib_corpora(n_docs: int = 1500, n_code: int = 300) -> tuple[list[dict], list[dict]]:
    """(docstring records, source-code records), deterministic for a given Python version."""
    docs, code, seen = [], [], set()
    for modname in STDLIB_MODULES:
        try:
            mod = importlib.import_module(modname)
        except Exception:  # pragma: no cover - optional stdlib parts
            continue
        for qual, obj in _members(mod):
            doc = inspect.getdoc(obj) or ""
            text = re.sub(r"\s+", " ", doc).strip()[:1200]
            if len(text) >= 60 and text not in seen:
                seen.add(text)
                docs.append({"id": qual, "text": text})
            if inspect.isfunction(obj) and len(code) < 4 * n_code:
                try:
                    src = inspect.getsource(obj)
                except (OSError, TypeError):
                    continue
                if obj.__doc__:  # code only: cut the docstring out of the source
                    src = src.replace(obj.__doc__, "")
                body = [l for l in src.splitlines() if l.strip() and not l.strip().startswith(("#", '"', "'"))]
                snippet = "\n".join(body[:12])
                if len(snippet) >= 120 and snippet not in seen:
                    seen.add(snippet)
                    code.append({"id": "src:" + qual, "text": snippet})
    # spread the take over all modules rather than the alphabetical head
    docs = docs[:: max(1, len(docs) // n_docs)][:n_docs]
    code = code[:: max(1, len(code) // n_code)][:n_code]
    return docs, code


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    return path


def demo_config(out: Path, n_docs: int = 1500, n_code: int = 300, fp16: bool = True) -> dict:
    """Write the demo corpora under out/data and return the experiment config that compares the family."""
    from .models import minilm_path

    docs, code = stdlib_corpora(n_docs, n_code)
    data = out / "data"
    write_jsonl(docs, data / "docstrings.jsonl")
    # interleaved 80/20 split: every fifth docstring is held out, so both halves cover every module
    write_jsonl([d for i, d in enumerate(docs) if i % 5], data / "docstrings-train.jsonl")
    write_jsonl(docs[::5], data / "docstrings-test.jsonl")
    write_jsonl(code, data / "stdlib-code.jsonl")
    models = [
        {"name": "MiniLM-L6 (fp32)", "base": str(minilm_path())},
        {"name": "MiniLM int8", "like": "MiniLM-L6 (fp32)", "variant": {"quantize": "int8", "per_channel": True}},
    ]
    if fp16:
        models.append({"name": "MiniLM fp16", "like": "MiniLM-L6 (fp32)", "variant": {"fp16": True}})
    models += [
        {"name": "MiniLM L3 (layers 1,3,5)", "like": "MiniLM-L6 (fp32)", "variant": {"keep_layers": [1, 3, 5]}},
        {"name": "MiniLM L2 (layers 2,5)", "like": "MiniLM-L6 (fp32)", "variant": {"keep_layers": [2, 5]}},
    ]
    jsonl = {"id_field": "id", "text_field": "text"}
    # K sweeps stop below the bank sizes (a small --docs would otherwise ask for k >= points)
    n_train = len(docs) - len(docs[::5])
    knn_sweep = [k for k in (1, 5, 10, 20, 50, 100) if k < len(docs) // 2] or [1]
    ood_sweep = [k for k in (1, 5, 10, 20, 50, 100) if k < n_train // 2] or [1]
    return {
        "title": "lookalike demo: is int8 / fp16 / layer-dropped MiniLM a miniature of MiniLM?",
        "description": (f"Offline demo on Python {sys.version.split()[0]} standard-library text: {len(docs)} docstrings "
                        f"(representation corpus; an interleaved 80/20 split is the OOD bank / in-distribution test) and {len(code)} "
                        "source-code snippets as the out-of-distribution challenge set. No fine-tuning, so "
                        "'before fine-tuning' is the only representation column and OOD uses the pre-trained "
                        "encoders. Prediction errors and BERT-Attack need fine-tuned models: see `lookalike run`."),
        "models": models,
        "datasets": {
            "representation": {"path": str(data / "docstrings.jsonl"), **jsonl},
            "ood_train": {"path": str(data / "docstrings-train.jsonl"), **jsonl},
            "ood_in_test": {"path": str(data / "docstrings-test.jsonl"), **jsonl},
            "ood_test": {"path": str(data / "stdlib-code.jsonl"), **jsonl},
        },
        "steps": {
            "embed": {"max_length": 256},
            "knn": {"k": min(10, max(knn_sweep)), "sweep": knn_sweep},
            "ood": {"k": min(10, max(ood_sweep)), "sweep": ood_sweep, "tpr": 0.95},
            "latency": {"batch_sizes": [1, 8, 32], "seq_lengths": [128], "repeat": 10},
        },
    }


def run_demo(out: str | Path = "lookalike-demo", n_docs: int = 1500, n_code: int = 300, echo=None,
             device: str = "auto", fp16: bool = True) -> Path:
    from .experiment import Experiment

    out = Path(out)
    cfg = demo_config(out, n_docs, n_code, fp16=fp16)
    return Experiment(cfg, out, out, echo=echo, device=device).run()
