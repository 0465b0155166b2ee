"""The public API reads like the ecosystem's: each entry point documents every parameter under Args and what it
gives under Returns, and the choice types equal the tuples the code checks against."""

from __future__ import annotations

import inspect
import typing

import pytest

import lookalike
from lookalike import params

ENTRY_POINTS = ["Embedder", "embed_to_store", "export", "embed", "open_store", "knn_self", "knn_sampled",
                "load_knn", "deep_knn_ood", "load_ood", "agreement", "cka_stores", "mutual_knn", "cknna"]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_parameter_is_documented(name):
    obj = getattr(lookalike, name)
    doc = inspect.getdoc(obj) or ""
    fn = obj.__init__ if inspect.isclass(obj) else obj
    assert "Args:" in doc, name
    if not inspect.isclass(obj):
        assert "Returns:" in doc, name
    args_part = doc.split("Args:", 1)[1].split("Returns:", 1)[0]
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self",):
            continue
        assert p.name in args_part, f"{name}: parameter {p.name!r} is not under Args"


def test_encode_documents_its_arguments():
    doc = inspect.getdoc(lookalike.Embedder.encode)
    assert "Args:" in doc and "Returns:" in doc and "token_embeddings" in doc


@pytest.mark.parametrize("alias, values", [
    (params.Pooling, params.POOLINGS), (params.Precision, params.DTYPES), (params.Index, params.INDEXES),
    (params.Measure, params.MEASURE_NAMES)])
def test_choice_types_are_the_checked_tuples(alias, values):
    assert set(typing.get_args(alias)) == set(values)


def test_task_and_backend_types_name_every_choice():
    from lookalike.core.heads import TASKS

    assert set(typing.get_args(params.Task)) == set(TASKS)
    assert set(typing.get_args(params.Backend)) == {"local", "ray"}
    assert "cuda" in typing.get_args(typing.get_args(params.Device)[0])
