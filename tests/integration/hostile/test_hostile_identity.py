"""Class 4, one identity for every artifact: artifacts of different record selections, corpora or features are
never compared as the same points; an error set is consistent with its own universe."""

from __future__ import annotations

import json

import pytest
from hostile_tools import one_line, run_cli

from lookalike.analysis.knn import knn_self
from lookalike.core.store import open_store
from lookalike.engine import embed
from lookalike.params import EmbedParams


@pytest.fixture(scope="module")
def two_selections(tiny_exports, corpus_file, tmp_path_factory):
    """Neighbour files of one JSONL embedded from its `text` field and from its `other` field (same ids)."""
    from lookalike.data import CorpusSpec

    root = tmp_path_factory.mktemp("two-selections")
    out = {}
    for field in ("text", "other"):
        embed(tiny_exports["bert2"], CorpusSpec(str(corpus_file), text_field=field), root / field,
              EmbedParams(max_length=32))
        knn_self(open_store(root / field), 3).save(root / f"{field}.knn.h5")
        out[field] = root / f"{field}.knn.h5"
    return out


def test_agree_refuses_neighbours_of_another_text_field(two_selections):
    r = run_cli("agree", "--knn", f"a={two_selections['text']}", "--knn", f"b={two_selections['other']}",
                "--k", "2", "--reps", "0")
    one_line(r, "text_field", "'text'", "'other'")


@pytest.mark.parametrize("option, value, key", [("--limit", "20", "limit"), ("--every", "2", "every"),
                                                ("--max-length", "16", "max_length"), ("--pooling", "mean", "pooling"),
                                                ("--normalize", None, "normalize")])
def test_agree_refuses_any_other_selection_or_feature(tiny_exports, corpus_file, small_knn, tmp_path, option, value,
                                                      key):
    args = ["embed", tiny_exports["bert2"], corpus_file, tmp_path / "s", "--max-length", "32"]
    if option == "--max-length":
        args[-1] = value
    else:
        args += [option] + ([value] if value is not None else [])
    assert run_cli(*args).rc == 0
    assert run_cli("knn", tmp_path / "s", tmp_path / "n.h5", "--k", "3").rc == 0
    # other points (--limit, --every) are refused on the selection, before any id is compared
    r = run_cli("agree", "--knn", f"a={small_knn}", "--knn", f"b={tmp_path / 'n.h5'}", "--k", "2", "--reps", "0")
    one_line(r, key)


def test_agree_refuses_an_artifact_without_an_identity(small_knn, tmp_path):
    """A neighbour file that does not record its selection (an older lookalike's) is not compared unchecked."""
    from lookalike.analysis.knn import load_knn

    res = load_knn(small_knn)
    res.meta = {k: v for k, v in res.meta.items() if k != "text_field"}
    res.save(tmp_path / "old.knn.h5")
    one_line(run_cli("agree", "--knn", f"a={small_knn}", "--knn", f"b={tmp_path / 'old.knn.h5'}", "--k", "2",
                     "--reps", "0"), "text_field", "older lookalike")


def _errors_file(path, errors, universe, **extra):
    from lookalike.analysis.scoring import ids_digest

    path.write_text(json.dumps({"kind": "lookalike.errors", "task": "cls", "error_ids": errors,
                                "universe": {"n": len(universe), "sha256": ids_digest(universe), "ids": universe,
                                             "complete": True}, **extra}))
    return path


def test_an_errors_file_with_ids_outside_its_universe_is_refused(tmp_path):
    good = _errors_file(tmp_path / "a.json", ["q1"], ["q1", "q2", "q3"])
    bad = _errors_file(tmp_path / "b.json", ["q1", "q9"], ["q1", "q2", "q3"])
    one_line(run_cli("agree", "--errors", f"a={good}", "--errors", f"b={bad}", "--reps", "0"), "b.json", "error_ids",
             "q9")


def test_an_errors_file_whose_universe_was_edited_is_refused(tmp_path):
    good = _errors_file(tmp_path / "a.json", ["q1"], ["q1", "q2", "q3"])
    edited = json.loads(good.read_text())
    edited["universe"]["ids"].append("q4")
    (tmp_path / "b.json").write_text(json.dumps(edited))
    one_line(run_cli("agree", "--errors", f"a={good}", "--errors", f"b={tmp_path / 'b.json'}", "--reps", "0"),
             "universe.ids", "digest")


@pytest.mark.parametrize("content, needle", [
    ('{"kind": "lookalike.errors", "error_ids": "q1"}', "error_ids"),
    ('{"kind": "lookalike.errors", "error_ids": [1, 2]}', "error_ids"),
    ('{"kind": "lookalike.errors", "error_ids": ["q1"], "universe": ["q1"]}', "universe"),
    ('{"kind": "lookalike.errors", "error_ids": ["q1"], "error_ids": ["q2"]}', "appears twice"),
])
def test_malformed_errors_files_are_one_line(tmp_path, content, needle):
    good = _errors_file(tmp_path / "a.json", ["q1"], ["q1", "q2"])
    (tmp_path / "b.json").write_text(content)
    one_line(run_cli("agree", "--errors", f"a={good}", "--errors", f"b={tmp_path / 'b.json'}", "--reps", "0"),
             "b.json", needle)


def test_ood_sets_of_other_challenge_records_are_refused(small_store, tiny_exports, corpus_file, tmp_path):
    from lookalike.analysis.agreement import distribution_agreement
    from lookalike.analysis.ood import deep_knn_ood
    from lookalike.data import CorpusSpec
    from lookalike.errors import InputError

    embed(tiny_exports["bert2"], CorpusSpec(str(corpus_file), text_field="other"), tmp_path / "other",
          EmbedParams(max_length=32))
    a = deep_knn_ood(open_store(small_store), open_store(small_store), [2], allow_overlap=True)
    b = deep_knn_ood(open_store(small_store), open_store(tmp_path / "other"), [2], allow_overlap=True)
    with pytest.raises(InputError, match="test_"):
        distribution_agreement(a, b, 2)
