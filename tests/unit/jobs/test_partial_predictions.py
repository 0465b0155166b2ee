"""evaluate: partial predictions are refused unless asked, and error sets over different universes are never compared."""

from __future__ import annotations

import json
import textwrap

import pytest
from support import _one_line_error, _run

from lookalike.analysis.agreement import error_agreement
from lookalike.analysis.scoring import load_errors
from lookalike.data import CorpusSpec
from lookalike.jobs import evaluate


# 4 ------------------------------------------------------------------------------------------------------------
def test_partial_predictions_are_refused_and_universes_must_match(shared_data, tmp_path):
    data = shared_data / "squad2_dev500"
    ids = [q["id"] for q in json.loads((data / "queries.json").read_text())["queries"]]
    full = {q: "" for q in ids}
    partial = {q: "" for q in ids[:100]}
    (tmp_path / "full.json").write_text(json.dumps(full))
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    r = _run("evaluate", data, tmp_path / "partial.json")
    _one_line_error(r, "no prediction for 400 of 500 records", ids[100], "--allow-missing")
    r = _run("evaluate", data, tmp_path / "partial.json", "--allow-missing", "-o", tmp_path / "p")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["total"] == m["scored"] == 100 and m["missing"] == 400 and m["complete"] is False
    evaluate(data, tmp_path / "full.json", out=tmp_path / "f")
    evaluate(data, tmp_path / "full.json", out=tmp_path / "g")
    errors = json.loads((tmp_path / "f" / "errors.json").read_text())
    assert errors["universe"]["n"] == 500 and errors["dataset_fingerprint"] == CorpusSpec(data).fingerprint()
    # two identical models over the same questions agree perfectly; over different questions: refused
    assert error_agreement(load_errors(tmp_path / "f"), load_errors(tmp_path / "g"))["jaccard"] == 1.0
    r = _run("agree", "--errors", f"a={tmp_path / 'f'}", "--errors", f"b={tmp_path / 'p'}", "--reps", "0")
    _one_line_error(r, "scored on 500 questions", "on 100")
    # other tools' error sets: a JSON list and a text file; --dataset checks they belong to the data
    (tmp_path / "theirs.json").write_text(json.dumps(ids[:30]))
    (tmp_path / "theirs.txt").write_text("\n".join(ids[10:40]) + "\n")
    r = _run("agree", "--errors", f"a={tmp_path / 'theirs.json'}", "--errors", f"b={tmp_path / 'theirs.txt'}",
             "--format", "json", "--reps", "0")
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["errors_jaccard"] == pytest.approx(20 / 40)
    assert "unchecked" in r.stderr
    r = _run("agree", "--errors", f"a={tmp_path / 'theirs.json'}", "--errors", f"b={tmp_path / 'theirs.txt'}",
             "--dataset", data, "--format", "json", "--reps", "200")
    row = json.loads(r.stdout)[0]
    assert r.exit_code == 0 and "unchecked" not in r.stderr and row["errors_jaccard_lo"] <= 0.5 <= row["errors_jaccard_hi"]
    (tmp_path / "alien.txt").write_text("not-a-squad-id\n")
    _one_line_error(_run("agree", "--errors", f"a={tmp_path / 'alien.txt'}", "--errors", f"b={tmp_path / 'f'}",
                         "--dataset", data), "not in")


# kill -9 at random points, then resume: byte-identical results --------------------------------------------------
KILLABLE = textwrap.dedent("""
    import sys
    from lookalike.cli import main
    sys.argv = ["lookalike", *sys.argv[1:]]
    main()
""")
