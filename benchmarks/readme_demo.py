"""The README's demo numbers, made by a fresh `lookalike demo` run and written into the README by this script, so
the README cannot drift from what the demo prints (tests/unit/test_readme_demo.py checks the README's block equals
the rendering of the results file).

    python benchmarks/readme_demo.py --run      # run the demo (minutes), keep its numbers → results/demo-readme.json
    python benchmarks/readme_demo.py --write    # render results/demo-readme.json into README.md's demo block
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import marked_block, with_marked_block, work_dir  # noqa: E402
RESULTS = HERE / "results" / "demo-readme.json"
BEGIN, END = "<!-- demo:begin (benchmarks/readme_demo.py writes this block) -->", "<!-- demo:end -->"


def _cell(row: dict, col: str) -> str:
    from lookalike.analysis.tables import with_interval

    cell = with_interval(row, col)
    if col == "ood_jaccard" and row.get("ood_meaningful") is False:
        cell += " ✗"
    return cell


def render(d: dict) -> str:
    """The README's demo block from the kept numbers."""
    from lookalike.analysis.report import round3
    from lookalike.analysis.tables import noise_headline

    ref = d["names"][0]
    attack = {r["target"]: r for r in d.get("table3", [])}
    acc = {r["model"]: r["accuracy"] for r in d.get("cls_metrics", [])}

    def attack_cell(name: str) -> str:
        r = attack.get(name)
        if not r:
            return "—"
        return (f"{round3(r['original_accuracy'])} → {round3(r['accuracy_after_attack'])} "
                f"(−{round3(r['percent_change'])}%)" if r["percent_change"] > 0 else
                f"{round3(r['original_accuracy'])} → {round3(r['accuracy_after_attack'])}")

    lines = [f"What it printed on {d['when'][:10]} ({d['seconds']:.0f} s; {d['machine']}; load average "
             f"{d['load_before']:.1f} before, {d['load_after']:.1f} after; `benchmarks/results/demo-readme.json`; "
             "vectors with "
             f"{'CLS' if d.get('pooling', 'cls') == 'cls' else d['pooling']} pooling). Table 2 against {ref}, each "
             "Jaccard with its bootstrap 95% interval (✗: not meaningful by the report's rule), and Table 3:", "",
             f"| {ref} vs | representation before FT (K={d['k']}) | after FT (K={d['k']}) | OOD sets "
             f"(k={d['k_ood']}) | prediction errors | attack: accuracy before → after |",
             "|---|---|---|---|---|---|"]
    for r in d["table2"]:
        if r["model_i"] != ref:
            continue
        errors = "cls_errors_jaccard" if "cls_errors_jaccard" in r else "errors_jaccard"
        lines.append(f"| {r['model_j']} | {_cell(r, 'repr_before_mean')} | {_cell(r, 'repr_after_mean')} | "
                     f"{_cell(r, 'ood_jaccard')} | {_cell(r, errors)} | {attack_cell(r['model_j'])} |")
    lines.append("")
    facts = [f"({ref} itself: {attack_cell(ref)} under attack.)"]
    if acc:
        facts.append("Held-out accuracy: " + ", ".join(f"{n} {round3(100 * a)}%" for n, a in acc.items()) + ".")
    ood = {r["model"]: r for r in d.get("ood_detail", [])}
    if ref in ood:
        o = ood[ref]
        facts.append(f"The reference flags {round3(100 * o['fraction_ood'])}% of the challenge set at TPR 95% with "
                     f"AUROC {round3(o['auroc'])}" + "".join(
                         f"; {n}: {round3(100 * r['fraction_ood'])}%, AUROC {round3(r['auroc'])}"
                         for n, r in ood.items() if n != ref) + ".")
    if d.get("differences"):
        facts.append(noise_headline(d["differences"], ref))
    mlm = (d.get("attack_setting") or "").partition("MLM: ")[2]
    if mlm:  # the attack's masked LM and how well it fills masks (paths of the run left out)
        facts.append("The attack's MLM: " + mlm)
    measures = [r for r in d.get("representation_measures", []) if r.get("phase") == "after FT"]
    if measures:
        facts.append("The field's other measures, after fine-tuning: " + "; ".join(
            f"{r['model']}: CKA {_cell(r, 'cka')}, mutual-kNN {_cell(r, 'mutual_knn')}, CKNNA {_cell(r, 'cknna')}"
            for r in measures if "cka" in r) + ".")
        widest = max((r for r in measures if "cka" in r and "mutual_knn" in r),
                     key=lambda r: r["cka"] - r["mutual_knn"], default=None)
        if widest is not None:  # when the measures disagree, and why, on this run's own numbers
            facts.append(f"They disagree most for {widest['model']}: CKA, global and dominated by the directions of "
                         f"largest variance, is {round3(widest['cka'])}, while mutual-kNN, which asks who is near "
                         f"whom, is {round3(widest['mutual_knn'])}: the main axes of the space survive the "
                         "compression better than each point's neighbourhood.")
    if d.get("step_seconds"):
        facts.append("Per-step time (`demo-readme.json`): " + ", ".join(f"{k} {v:.0f} s" for k, v in d["step_seconds"].items()) + ".")
    lines.append(" ".join(facts))
    return "\n".join(lines)


def readme_block(text: str) -> str:
    return marked_block(text, BEGIN, END)


def run(keep: bool) -> dict:
    from lookalike.analysis.tables import machine_provenance

    work = work_dir("lookalike-readme-demo-", keep=keep)
    before = os.getloadavg()[0]
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lookalike.cli", "-q", "demo", str(work / "demo")], check=True,
                   env={**os.environ, "LOOKALIKE_CACHE": str(work / "cache")})
    seconds = time.perf_counter() - t
    s = json.loads((work / "demo" / "report" / "summary.json").read_text())
    keys = ("table2", "table3", "cls_metrics", "ood_detail", "differences", "step_seconds", "k", "k_ood",
            "attack_setting", "pooling", "representation_measures")
    from lookalike.core.cpu import cpu_info

    cpu = cpu_info()
    d = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(seconds, 1),
         "machine": f"{cpu['model']}, {os.cpu_count()} cores, int8 class {cpu['int8_class']}",
         "machine_full": machine_provenance(),
         "load_before": before, "load_after": os.getloadavg()[0], "names": s["models"],
         **{k: s[k] for k in keys if k in s}}
    RESULTS.write_text(json.dumps(d, indent=2, default=float) + "\n")
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="store_true", help="run the demo now and keep its numbers")
    ap.add_argument("--write", action="store_true", help="write the README's demo block from the kept numbers")
    ap.add_argument("--keep", action="store_true", help="keep the demo's folder")
    args = ap.parse_args()
    if args.run:
        run(args.keep)
    if args.write:
        readme = ROOT / "README.md"
        readme.write_text(with_marked_block(readme.read_text(), BEGIN, END, render(json.loads(RESULTS.read_text()))))
    if not (args.run or args.write):
        ap.print_help()


if __name__ == "__main__":
    main()
