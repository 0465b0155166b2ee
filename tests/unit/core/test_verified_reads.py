"""Reads that verify what they read: all-zero vectors warned, a BOM not part of the first id, duplicate YAML keys
refused, a partial no-answer file refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lookalike.analysis.knn import knn_self
from lookalike.analysis.scoring import load_errors
from lookalike.data import CorpusSpec
from lookalike.errors import InputError
from lookalike.jobs import evaluate
from lookalike.params import EmbedParams

PARAMS = EmbedParams(max_length=64, shard_rows=50)


# minor ------------------------------------------------------------------------------------------------------
def test_all_zero_vectors_are_warned(caplog):
    x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    x[[3, 7]] = 0
    with caplog.at_level("WARNING", logger="lookalike"):
        knn_self(x, 3)
    assert "2 all-zero vectors" in caplog.text


def test_a_bom_is_not_part_of_the_first_id(tmp_path):
    p = tmp_path / "errors.txt"
    p.write_bytes("\ufeffq1\nq2\n".encode("utf-8"))
    assert load_errors(p).ids == {"q1", "q2"}


def test_duplicate_yaml_keys_are_refused(tmp_path):
    from lookalike.experiment import load_config

    p = tmp_path / "e.yaml"
    p.write_text("title: a\nmodels: []\ntitle: b\n")
    with pytest.raises(InputError, match=r"key 'title' is given twice \(lines 1 and 3\)"):
        load_config(p)


def test_a_partial_na_prob_file_is_refused(shared_data, tmp_path):
    data = shared_data / "squad2_dev500"
    ids = [r.id for r in CorpusSpec(data).records()]
    preds = {q: "" for q in ids}
    probs = {q: 0.5 for q in ids[:10]}
    with pytest.raises(InputError, match=f"covers 10 of the {len(ids)} predicted questions"):
        evaluate(data, preds, na_probs=probs)


@given(st.recursive(st.text() | st.integers() | st.none(), lambda c: st.lists(c, max_size=3), max_leaves=6))
def test_a_jsonl_line_is_one_line_for_every_reader(value):
    """Every JSON line lookalike writes (ids.jsonl, texts.jsonl, a list's corpus copy) stays one line for readers
    that split on Unicode line ends too (str.splitlines), and reads back as the value."""
    import json

    from lookalike.files import jsonl_line

    line = jsonl_line(value)
    assert line.endswith("\n") and len(line.splitlines()) == 1 and json.loads(line) == value
