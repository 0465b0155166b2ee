"""Text every install has: the Python standard library's docstrings (labelled by library area), its source code,
and the license texts the installed packages ship. Deterministic for a given Python and set of packages."""

from __future__ import annotations

import importlib
import inspect
import re

# Topic of each module's docstrings: the demo's classification task (which area of the library is this about?)
TOPICS = {
    "text": ["codecs", "difflib", "gettext", "html", "html.parser", "locale", "pprint", "re", "reprlib", "shlex",
             "string", "textwrap", "tokenize"],
    "data formats and archives": ["base64", "configparser", "csv", "gzip", "json", "lzma", "mailbox", "mimetypes",
                                  "pickle", "plistlib", "shelve", "struct", "tarfile", "wave", "xml.dom.minidom",
                                  "xml.etree.ElementTree", "zipfile"],
    "files and processes": ["fileinput", "fnmatch", "glob", "io", "os", "pathlib", "pkgutil", "platform", "shutil",
                            "signal", "subprocess", "tempfile"],
    "networking and the web": ["email", "email.message", "ftplib", "http.client", "http.cookies", "http.server",
                               "imaplib", "ipaddress", "poplib", "selectors", "smtplib", "socket", "socketserver",
                               "ssl", "urllib.parse", "urllib.request", "uuid", "xmlrpc.client"],
    "concurrency": ["asyncio", "concurrent.futures", "multiprocessing", "queue", "sched", "threading"],
    "numbers and time": ["bisect", "calendar", "datetime", "decimal", "fractions", "hashlib", "heapq", "hmac",
                         "numbers", "random", "secrets", "statistics", "zoneinfo"],
    "language and tooling": ["argparse", "collections", "contextlib", "copy", "dataclasses", "doctest", "enum",
                             "functools", "getopt", "inspect", "itertools", "logging", "logging.handlers",
                             "operator", "optparse", "pdb", "timeit", "trace", "traceback", "types", "typing",
                             "unittest", "warnings", "weakref"],
}
STDLIB_MODULES = sorted(m for mods in TOPICS.values() for m in mods)
TOPIC_OF = {m: t for t, mods in TOPICS.items() for m in mods}


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
                docs.append({"id": qual, "text": text, "label": TOPIC_OF[modname]})
            if n_code and inspect.isfunction(obj) and len(code) < 4 * n_code:
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
    code = code[:: max(1, len(code) // n_code)][:n_code] if n_code else []
    return docs, code


def legal_corpus(n: int = 300) -> list[dict]:
    """Paragraphs of the license texts that lookalike's own declared dependencies ship (legal English, a domain
    far from API documentation), deduplicated and spread over packages; the same for every install of one
    lookalike version with the same dependency versions (other installed packages do not change it)."""
    import importlib.metadata as md

    try:
        names = sorted({re.split(r"[ ;<>=!~\[]", r)[0].lower() for r in md.requires("lookalike") or []
                        if "extra ==" not in r})
    except md.PackageNotFoundError:  # running from a source tree that is not installed
        names = []
    dists = []
    for name in names:
        try:
            dists.append(md.distribution(name))
        except md.PackageNotFoundError:
            continue
    paras, seen = [], set()
    for dist in dists:
        name = (dist.metadata["Name"] or "?").lower()
        for f in sorted(dist.files or [], key=str):
            if not f.name.upper().startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE")):
                continue
            try:
                text = f.locate().read_text(errors="replace")
            except OSError:
                continue
            for para in re.split(r"\n\s*\n", text):
                t = re.sub(r"\s+", " ", para).strip()[:1200]
                if len(t.split()) < 12 or sum(c.isalpha() for c in t) < 0.7 * len(t) or t.lower() in seen:
                    continue
                seen.add(t.lower())
                paras.append({"id": f"license:{name}:{len(paras)}", "text": t})
    if len(paras) <= n:
        return paras
    return [paras[i * len(paras) // n] for i in range(n)]  # evenly over all packages
