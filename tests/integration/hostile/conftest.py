"""Fixtures of the hostile suite (its tools are in hostile_tools.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("hostile-corpus") / "corpus.jsonl"
    p.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document number {i} about topic {i % 5}",
                                     "other": f"another field {i}", "label": i % 2}) + "\n" for i in range(24)))
    return p


@pytest.fixture(scope="session")
def small_store(tiny_exports, corpus_file, tmp_path_factory) -> Path:
    from lookalike.engine import embed
    from lookalike.params import EmbedParams

    out = tmp_path_factory.mktemp("hostile-store") / "store"
    embed(tiny_exports["bert2"], corpus_file, out, EmbedParams(max_length=32, shard_rows=10))
    return out


@pytest.fixture(scope="session")
def small_knn(small_store, tmp_path_factory) -> Path:
    from lookalike.analysis.knn import knn_self
    from lookalike.core.store import open_store

    out = tmp_path_factory.mktemp("hostile-knn") / "n.knn.h5"
    knn_self(open_store(small_store), 3).save(out)
    return out
