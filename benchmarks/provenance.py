"""Where every number in the README comes from: one row per results file (machine, load, the command).

The README quotes timings from `benchmarks/results/*.json`; each timing names its file, and the README's
"Where the numbers come from" table is this script's output, so a file's machine and load cannot be misquoted.
`tests/unit/test_readme_timings.py` checks both (every timing names a file; the table equals this output).

    python benchmarks/provenance.py            # print the table
    python benchmarks/provenance.py --write    # write it into README.md between its markers
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import marked_block, with_marked_block  # noqa: E402

RESULTS = HERE / "results"
README = HERE.parent / "README.md"
BEGIN = "<!-- provenance:begin (benchmarks/provenance.py writes this block) -->"
END = "<!-- provenance:end -->"
# results files whose script name is not their name's prefix
SCRIPTS = {"identity-refactor.json": "check_identical.py", "demo-readme.json": "readme_demo.py"}


def script_for(name: str) -> str:
    """The benchmark script that writes results file `name` (the longest `bench_<prefix>.py` of its name)."""
    if name in SCRIPTS:
        return SCRIPTS[name]
    parts = name.removesuffix(".json").split("-")
    for n in range(len(parts), 0, -1):
        script = "bench_" + "_".join(parts[:n]) + ".py"
        if (HERE / script).exists():
            return script
    raise LookupError(f"{name}: no benchmarks/bench_<prefix>.py writes it; add it to SCRIPTS")


def machine(result: dict) -> str:
    """CPU model, cores and int8 class (or the GPU) as the file recorded them."""
    m = result.get("machine")
    if isinstance(m, str):
        return m.replace("(R)", "").replace(" Processor", "").replace("int8 class ", "")
    m = m or {}
    cpu = m.get("cpu") if isinstance(m.get("cpu"), dict) else m
    model = (cpu.get("cpu_model") or "").replace("(R)", "").replace(" Processor", "").strip()
    model = " ".join(model.split()[:3]) or "x86-64, model not recorded"
    text = f"{model}, {m.get('cpus', '?')} cores"
    if cpu.get("int8_class"):
        text += f", {cpu['int8_class']}"
    if m.get("gpu"):
        text = f"{m['gpu']} ({m.get('cpus', '?')}-core host)"
    return text


def _one_min(load) -> float | None:
    if isinstance(load, dict):
        return load.get("1min")
    if isinstance(load, (list, tuple)):
        return load[0] if load else None
    return load if isinstance(load, (int, float)) else None


def load(result: dict) -> str:
    """The 1-minute load as recorded: before/after the run, others' CPUs during it, or 'not recorded'."""
    parts = []
    before, after = _one_min(result.get("load_before")), _one_min(result.get("load_after"))
    if before is not None:
        parts.append(f"{before:.2f} before")
    if after is not None:
        parts.append(f"{after:.2f} after")
    during = result.get("load_during")
    if isinstance(during, dict) and during.get("others_cpus") is not None:
        parts.append(f"other processes {during['others_cpus']:.2f} CPUs during")
    conditions = result.get("conditions")
    if isinstance(conditions, dict) and any("busy" in k for k in conditions):
        parts.append("idle and other-core-busy conditions")
    if not parts and _one_min(result.get("load_at_save")) is not None:
        parts.append(f"{_one_min(result['load_at_save']):.2f} at the end (its own work included)")
    return "; ".join(parts) or "not recorded"


def rows() -> list[tuple[str, str, str, str, str]]:
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        when = str(result.get("when", "?"))[:10]
        command = result.get("invoked_as") or f"benchmarks/{script_for(path.name)}"
        out.append((path.name, when, machine(result), load(result), command))
    return out


def table() -> str:
    lines = ["| results file | measured | machine | 1-minute load | written by |", "|---|---|---|---|---|"]
    lines += [f"| `{name}` | {when} | {mach} | {ld} | `{command}` |" for name, when, mach, ld, command in rows()]
    return "\n".join(lines)


# a time, a rate or a speed ratio: "8.4 min", "0.19 s", "2.7 h", "936 rows/s", "12.9k tokens/s", "1.35×"
TIMING = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)? ?(?:ms|s|min|minutes|seconds|h|hours)\b"
                    r"|\d(?:[\d.,]*\d)?[kM]? (?:real )?(?:tokens|rows|records|features|shards)/s\b"
                    r"|\d(?:\.\d+)?×")
CITED = re.compile(r"([\w.-]+\.json)\b")
_ITEM = re.compile(r"^(?:[-*]|\d+\.) ")


def timing_blocks(text: str) -> list[tuple[int, str]]:
    """The README's blocks that quote a time, a rate or a speed ratio, as (first line, text).

    A block is a paragraph, a top-level list item with its indented lines and sub-items, or a fenced code block;
    a table belongs to the paragraph just above it (its caption). Headings end blocks.
    """
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start = 0
    fence = False
    table_caption = False  # the block before a blank line is a table's caption, if the table follows

    def close():
        nonlocal current
        if current:
            blocks.append((start, current))
        current = []

    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if not fence:
                close()
                start = number
            current.append(line)
            fence = not fence
            if not fence:
                close()
            continue
        if fence:
            current.append(line)
            continue
        if not line.strip():
            if current:
                close()
                table_caption = True
            continue
        if line.startswith("#") or _ITEM.match(line):
            close()
            table_caption = False
        if line.startswith("#"):
            continue
        if not current:
            if line.startswith("|") and table_caption and blocks:
                start, current = blocks.pop()  # the caption and its table are one block
                current = [*current, line]
                table_caption = False
                continue
            start = number
            table_caption = False
        current.append(line)
    close()
    return [(first, " ".join(lines)) for first, lines in blocks if TIMING.search(" ".join(lines))]


def uncited(text: str, known: set[str]) -> list[str]:
    """Each block that quotes a timing without naming a results file in `known`: 'line N: its start'."""
    return [f"line {first}: {block[:100]}" for first, block in timing_blocks(text)
            if not set(CITED.findall(block)) & known]


def readme_block(text: str) -> str:
    return marked_block(text, BEGIN, END)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write the table into README.md")
    ap.add_argument("--check", action="store_true", help="list the README's timings that name no results file")
    args = ap.parse_args()
    if args.check:
        missing = uncited(README.read_text(), {p.name for p in RESULTS.glob("*.json")})
        print("\n".join(missing) or "every timing names its results file")
        raise SystemExit(1 if missing else 0)
    if not args.write:
        print(table())
        return
    README.write_text(with_marked_block(README.read_text(), BEGIN, END, table()))
    print(f"wrote {len(rows())} rows into {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
