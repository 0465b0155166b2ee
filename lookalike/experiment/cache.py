"""Content-keyed step outputs: `OUT/steps/<step>/<label>-<key>/`, done when its marker is written (last).

The key hashes the step's inputs (upstream artifact hashes, corpus fingerprints) and parameters; a re-run skips
steps whose output is marked done, and changing a parameter changes only the keys of the steps that depend on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Callable

from ..core.store import open_store
from ..outputs import LEDGER, OwnedFolder

log = logging.getLogger(__name__)

DONE = ".done.json"


def step_key(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")[:60] or "x"


def file_id(path: str) -> str:
    """Cheap identity of a local model path (size + mtime of its files); the id itself for hub names."""
    p = Path(path)
    if not p.exists():
        return f"hub:{path}"
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    return step_key([(str(f.relative_to(p) if p.is_dir() else f.name), f.stat().st_size, int(f.stat().st_mtime))
                     for f in files if DONE not in f.name and f.name != LEDGER])


def store_key(store: Path) -> str:
    """A store's content identity from its manifest's shard checksums (the step that reads it verifies the shards;
    making a key does not hash them again)."""
    return open_store(store, verify=False).key()


class StepCache:
    """Content-keyed step outputs with an explicit done marker (written last)."""

    def __init__(self, root: Path, echo: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.echo = echo or (lambda s: log.info(s))
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.seconds: dict[str, float] = {}

    def run(self, step: str, label: str, key_parts: dict, fn: Callable[[Path], Any]) -> Path:
        key = step_key({"step": step, **key_parts})
        # the key alone identifies the output (two models sharing a checkpoint share its fine-tuning);
        # the label only makes folder names readable
        for existing in sorted((self.root / "steps" / step).glob(f"*-{key}")):
            if (existing / DONE).exists():
                self.skipped.append(f"{step}:{label}")
                return existing
        out = self.root / "steps" / step / f"{_slug(label)}-{key}"
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self.echo(f"[{step}] {label} ...")
        fn(out)
        seconds = round(time.perf_counter() - t0, 2)
        self.seconds[step] = self.seconds.get(step, 0.0) + seconds
        OwnedFolder(out).write_json(DONE, json.loads(json.dumps({"step": step, "label": label, "key": key,
                                                               "inputs": key_parts, "seconds": seconds}, default=str)))
        self.ran.append(f"{step}:{label}")
        return out
