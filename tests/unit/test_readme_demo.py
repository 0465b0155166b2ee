"""The README's demo numbers are the rendering of the demo run kept in benchmarks/results/demo-readme.json (made by
`python benchmarks/readme_demo.py --run --write`): they cannot drift from what the demo printed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("readme_demo", ROOT / "benchmarks" / "readme_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_readme_block_is_the_rendering_of_the_kept_run():
    demo = _script()
    kept = json.loads(demo.RESULTS.read_text())
    block = demo.readme_block((ROOT / "README.md").read_text())
    assert block == demo.render(kept)
    assert kept["names"][0] in block and "[" in block  # the numbers, with their intervals


def test_the_rendering_changes_with_the_numbers():
    demo = _script()
    kept = json.loads(demo.RESULTS.read_text())
    changed = json.loads(json.dumps(kept))
    row = next(r for r in changed["table2"] if r["model_i"] == kept["names"][0])
    row["repr_before_mean"] = 0.123456
    assert demo.render(changed) != demo.render(kept) and "0.123" in demo.render(changed)
