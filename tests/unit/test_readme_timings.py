"""Every time the README quotes names the results file it came from, and the README's provenance table (machine,
load, command of each file) is `benchmarks/provenance.py`'s output over the files themselves."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def provenance():
    spec = importlib.util.spec_from_file_location("provenance", ROOT / "benchmarks" / "provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_readme_timing_names_its_results_file(provenance):
    known = {p.name for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    assert provenance.uncited((ROOT / "README.md").read_text(), known) == []


def test_the_provenance_table_is_the_files_own(provenance):
    text = (ROOT / "README.md").read_text()
    assert provenance.readme_block(text) == provenance.table()


def test_every_results_file_has_a_row_with_machine_and_load(provenance):
    names = sorted(p.name for p in (ROOT / "benchmarks" / "results").glob("*.json"))
    rows = provenance.rows()
    assert [r[0] for r in rows] == names
    for name, when, machine, load, command in rows:
        assert when[:4].isdigit(), name
        assert "cores" in machine or "GPU" in machine or "NVIDIA" in machine, (name, machine)
        assert load, name
        assert command.startswith(("python ", "benchmarks/")), (name, command)


KNOWN = {"engine-peers-cpu.json", "demo-readme.json"}


@pytest.mark.parametrize("text, flagged", [
    ("It embeds 12.9k tokens/s on 2 cores.\n", [1]),
    ("It embeds 12.9k tokens/s (`engine-peers-cpu.json`).\n", []),
    ("It embeds 12.9k tokens/s (`nowhere.json`).\n", [1]),  # a file that is not in results/
    ("The run took 8.4 min.\n\nLater: 0.19 s (`demo-readme.json`).\n", [1]),
    ("lookalike fp32 is 1.35× ST.\n", [1]),
    ("No timing: 100,000 × 384 rows, 1.05 GB, 200 times.\n", []),
    # a table belongs to its caption, the paragraph just above it
    ("Measured (`engine-peers-cpu.json`):\n\n| run | tokens/s |\n|---|---|\n| fp32 | 12.9k tokens/s |\n", []),
    ("Measured here:\n\n| run | time |\n|---|---|\n| fp32 | 30 s |\n", [1]),
    # each top-level list item is its own block, its sub-items with it
    ("- a: 3 s (`demo-readme.json`)\n- b: 4 s\n", [2]),
    ("- a (`demo-readme.json`):\n  - 3 s\n  - 4 s\n", []),
    # a heading ends a block; a code block is a block of its own
    ("# Speed (`demo-readme.json`)\nIt took 5 s.\n", [2]),
    ("```bash\nlookalike demo   # about 6 minutes\n```\n", [1]),
    ("```bash\nlookalike demo   # 281 s (demo-readme.json)\n```\n", []),
])
def test_the_check_flags_exactly_the_uncited_blocks(provenance, text, flagged):
    found = [int(line.split(":")[0].removeprefix("line ")) for line in provenance.uncited(text, KNOWN)]
    assert found == flagged


@pytest.mark.parametrize("result, expected", [
    ({"load_before": [0.42, 0.9, 1.1], "load_after": {"1min": 0.3}}, "0.42 before; 0.30 after"),
    ({"load_during": {"others_cpus": 0.05}}, "other processes 0.05 CPUs during"),
    ({"load_at_save": {"1min": 1.96}}, "1.96 at the end (its own work included)"),
    ({}, "not recorded"),
])
def test_load_is_quoted_as_recorded(provenance, result, expected):
    assert provenance.load(result) == expected


@pytest.mark.parametrize("machine, expected", [
    ({"cpu_model": "Intel(R) Xeon(R) Processor", "cpus": 2, "int8_class": "AMX"}, "Intel Xeon, 2 cores, AMX"),
    ({"cpus": 16, "gpu": "NVIDIA H100 80GB HBM3"}, "NVIDIA H100 80GB HBM3 (16-core host)"),
    ({"cpus": 2, "cpu": {"cpu_model": "AMD EPYC 9B14", "int8_class": "AVX-512 VNNI"}},
     "AMD EPYC 9B14, 2 cores, AVX-512 VNNI"),
    ({"cpus": 2}, "x86-64, model not recorded, 2 cores"),
])
def test_machine_is_quoted_as_recorded(provenance, machine, expected):
    assert provenance.machine({"machine": machine}) == expected
