"""`lookalike run --check`: an experiment file, its models' sources and its datasets (read whole) are checked and
what would run is said, with nothing run or written; each problem is one line naming the file, record and field."""

from __future__ import annotations

import json

from click.testing import CliRunner

from lookalike.cli import cli
from support import _one_line_error


def _files(tmp_path):
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


def test_a_good_file_is_checked_and_nothing_runs(tmp_path, shared_data, tiny_models):
    squad = shared_data / "squad2" / "cs224n-dev-v2.0.json"
    (tmp_path / "exp.yaml").write_text(
        f"models:\n  - {{name: tiny, base: {tiny_models['bert2']}}}\n  - {{name: tiny int8, like: tiny, variant: "
        f"{{quantize: int8}}}}\ndatasets:\n  representation: {{path: {squad}, limit: 50}}\n"
        f"  cls_eval: {shared_data / 'imdb' / 'imdb_1k.tsv'}\nsteps:\n  latency: {{repeat: 2}}\n")
    before = _files(tmp_path)
    r = CliRunner().invoke(cli, ["run", str(tmp_path / "exp.yaml"), "--check"])
    assert r.exit_code == 0, r.output + r.stderr
    assert f"model tiny: base: folder {tiny_models['bert2']}; variant fp32" in r.stdout
    assert "model tiny int8:" in r.stdout and "variant int8" in r.stdout
    assert f"dataset representation: 50 records from {squad}" in r.stdout
    assert "dataset cls_eval: 1,000 records" in r.stdout
    assert "steps: export, embed + knn (representation), predict (cls), latency; output " in r.stdout
    assert r.stdout.strip().endswith("nothing was run")
    assert _files(tmp_path) == before  # nothing written


def test_each_problem_is_one_line(tmp_path, shared_data, tiny_models):
    def check(text, *needles, out=None):
        (tmp_path / "exp.yaml").write_text(text)
        r = CliRunner().invoke(cli, ["run", str(tmp_path / "exp.yaml"), "--check",
                                                     *(["-o", str(out)] if out else [])])
        _one_line_error(r, *needles)

    model = f"models:\n  - {{name: tiny, base: {tiny_models['bert2']}}}\n"
    check(model + f"datasets:\n  representation: {tmp_path / 'missing.jsonl'}\n", str(tmp_path / "missing.jsonl"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"id": "a", "text": "fine"}) + "\n" + json.dumps({"id": "b", "body": "x"}) + "\n")
    check(model + f"datasets:\n  representation: {broken}\n", str(broken), "line 2", "text")
    check(f"models:\n  - {{name: gone, base: {tmp_path / 'no-model'}}}\n", str(tmp_path / "no-model"),
          "no such model folder")
    check(model + "datasets:\n  representatoin: x.jsonl\n", "representatoin", "did you mean 'representation'")
    bad_ft = (f"models:\n  - name: t\n    base: {tiny_models['bert2']}\n    sentiment: {{finetune: {{data: {broken}}}}}\n")
    check(bad_ft, str(broken), "line 2")
    (tmp_path / "out" / "report").mkdir(parents=True)
    (tmp_path / "out" / "report" / "notes.txt").write_text("mine")
    check(model, "notes.txt", out=tmp_path / "out")
