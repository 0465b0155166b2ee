"""Tables (Markdown, CSV, JSON), K-sweep figures (PNG) and the report a person reads (Markdown + HTML)."""

from __future__ import annotations

import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..outputs import OwnedFolder, owned_file


def round3(v: float) -> str:
    """The report's one rounding rule: three significant figures, never dropping a digit before the point
    (0.7347 → 0.735, 0.02134 → 0.0213, 30.7692 → 30.8, 1234.6 → 1235); below 1e-4, 2.1e-05. Files (CSV, JSON)
    hold every digit."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    if a < 1e-4:
        return f"{v:.1e}"
    decimals = max(0, 2 - math.floor(math.log10(a)))
    return f"{v:.{decimals}f}"


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "—" if math.isnan(v) else round3(v)
    return str(v)


def markdown_table(rows: Sequence[dict], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def html_table(rows: Sequence[dict], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    headers = list(headers or columns)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """The rows as CSV (header first; keys outside `columns` left out), without the last newline."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().rstrip()


def write_table(rows: Sequence[dict], columns: Sequence[str], base: Path, headers: Sequence[str] | None = None) -> str:
    """Write base.md, base.csv and base.json (each refused, before any is written, if a file there is not
    lookalike's); return the Markdown."""
    folder, _ = owned_file(base)
    names = [base.with_suffix(s).name for s in (".md", ".csv", ".json")]
    folder.claim(*names, what="table")
    md = markdown_table(rows, columns, headers)
    folder.write_text(names[0], md + "\n")
    with folder.writing(names[1]) as tmp, open(tmp, "w", newline="") as fh:
        fh.write(csv_text(rows, columns) + "\r\n")
    folder.write_json(names[2], list(rows))
    return md


def save_figure(fig, path: Path) -> None:
    """A matplotlib figure written through the output owner (PNG, or the format of the file's suffix)."""
    folder, name = owned_file(path)
    with folder.writing(name, what="figure") as tmp:
        fig.savefig(tmp, format=Path(name).suffix.lstrip(".") or "png")


def plot_sweep(curves: dict, title: str, ylabel: str, path: Path) -> None:
    """One line per model pair: x = K, y = agreement (the shape of the paper's Figure 1). Each curve is a
    `tables.Curve` (or (Ks, values)): its 95% band is shaded, and points the report calls not meaningful are
    drawn hollow with a ✗ in the legend, outside the line."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=130)
    marked = False
    causes: list[str] = []
    for label, curve in curves.items():
        xs, ys = (list(curve.ks), list(curve.values)) if hasattr(curve, "ks") else (list(curve[0]), list(curve[1]))
        bad = list(getattr(curve, "not_meaningful", [])) or [False] * len(xs)
        good_y = [y if not b else math.nan for y, b in zip(ys, bad)]
        (line,) = ax.plot(xs, good_y, marker="o", markersize=3.5, linewidth=1.4, label=label)
        lo = [math.nan if b else v for v, b in zip(getattr(curve, "lo", []), bad)]  # bands for meaningful points
        hi = [math.nan if b else v for v, b in zip(getattr(curve, "hi", []), bad)]
        if lo and not all(math.isnan(v) for v in lo):
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
        if any(bad):
            marked = True
            for why in getattr(curve, "reasons", []) or []:
                for cause in why_kinds(why):
                    if cause not in causes:
                        causes.append(cause)
            ax.plot([x for x, b in zip(xs, bad) if b], [y for y, b in zip(ys, bad) if b], linestyle="none",
                    marker="o", markersize=5, markerfacecolor="none", markeredgecolor=line.get_color())
    if marked:
        ax.plot([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="grey",
                label=f"✗ not meaningful ({'; '.join(causes) or 'see the text'})")
    ax.set_xlabel("K")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def why_kinds(why: str) -> list[str]:
    """The kinds of reason in a verdict's words ("L3 AUROC 0.840 < 0.9; L2 flags 1.0% of the challenge set
    (< 5%)"): what a legend can say in a few words."""
    kinds = []
    for part in why.split(";"):
        if "no AUROC" in part:
            kinds.append("no AUROC")
        elif "AUROC" in part:
            kinds.append("AUROC < 0.9")
        elif "flags" in part:
            kinds.append("flags < 5% of the challenge set")
    return list(dict.fromkeys(kinds))


class Report:
    """Accumulates sections; writes report.md and report.html side by side."""

    def __init__(self, title: str):
        self.title = title
        self.md: list[str] = [f"# {title}", ""]
        self.html: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def text(self, s: str) -> None:
        self.md += [s, ""]
        self.html.append(f"<p>{html.escape(s)}</p>")

    def heading(self, s: str) -> None:
        self.md += [f"## {s}", ""]
        self.html.append(f"<h2>{html.escape(s)}</h2>")

    def table(self, rows, columns, headers=None) -> None:
        self.md += [markdown_table(rows, columns, headers), ""]
        self.html.append(html_table(rows, columns, headers))

    def image(self, rel: str, caption: str) -> None:
        self.md += [f"![{caption}]({rel})", ""]
        self.html.append(f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def write(self, out_dir: Path) -> Path:
        folder = OwnedFolder(out_dir)
        folder.claim("report.md", "report.html", what="report")
        folder.write_text("report.md", "\n".join(self.md) + "\n")
        style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;}table{border-collapse:collapse;"
                 "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:640px}")
        folder.write_text("report.html", f"<!doctype html><meta charset=utf-8><title>{html.escape(self.title)}"
                                             f"</title><style>{style}</style>" + "\n".join(self.html))
        return out_dir / "report.md"


def dump_json(obj, path: Path) -> None:
    folder, name = owned_file(path)
    folder.write_json(name, json.loads(json.dumps(obj, default=str)))


# --------------------------------------------------------------------------- `lookalike bench`

def bench_markdown(result: dict) -> str:
    """`run_bench`'s measurement as a Markdown table with its notes (speed-ups, corpus rates, int8, CPU)."""
    models = result["models"]
    first = Path(models[0]["model"]).name
    lines = [f"| model | variant | batch | seq | p50 ms | p90 ms | p99 ms | seq/s | × {first} | spread | GFLOP/s "
             "| of fp32 ceiling |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in models:
        for r in e["latency"]:
            frac = f"{r['fraction_of_ceiling']:.0%}" if r["fraction_of_ceiling"] is not None else "—"
            lines.append(f"| {Path(e['model']).name} | {e['variant']} | {r['batch_size']} | {r['seq_len']} | "
                         f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['seq_per_s']:.1f} | "
                         f"{r['speedup_vs_first']:.2f}× | {r['spread']:.0%} | {r['gflops']:.1f} | {frac} |")
    lines.append("\nModels are timed interleaved, run by run; spread: how far the medians of three slices of a "
                 "cell's runs differ (large on a busy machine). int8 rows have no fraction of the fp32 ceiling.")
    for e in models:
        if "corpus_throughput" in e:
            c = e["corpus_throughput"]
            lines.append(f"\n{Path(e['model']).name}: engine on corpus {c['rows_per_s']:.1f} rows/s, "
                         f"{c['real_tokens_per_s']:.0f} real tokens/s")
    for e in models:
        if "int8" in e:
            lines.append(f"\n{Path(e['model']).name}: {e['int8']['line']}")
    cpu = result["cpu"]
    lines.append(f"\nCPU: {cpu['model']}, {cpu['logical_cpus']} logical CPUs, ISA {' '.join(cpu['isa'])} "
                 f"(int8 class: {cpu['int8_class']})")
    lines.append(f"\nmatmul ceiling (best of numpy and ONNX Runtime fp32 GEMM): {result['gemm_ceiling_gflops']:.1f} GFLOP/s")
    return "\n".join(lines)


def plot_bench(models: list[dict], path: Path) -> None:
    """Left: p50 latency by batch size, one line per model and sequence length (bars up to p90). Right: the best
    sequences/s over batch sizes, by sequence length, per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    seqs = sorted({r["seq_len"] for e in models for r in e["latency"]})
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v"]
    for m, e in enumerate(models):
        color = f"C{m % 10}"
        name = Path(e["model"]).name
        for j, L in enumerate(seqs):
            rows = sorted((r for r in e["latency"] if r["seq_len"] == L), key=lambda r: r["batch_size"])
            if not rows:
                continue
            p50 = np.array([r["p50_ms"] for r in rows])
            p90 = np.array([r.get("p90_ms", r["p50_ms"]) for r in rows])
            axes[0].errorbar([r["batch_size"] for r in rows], p50, yerr=[np.zeros_like(p50), p90 - p50],
                             color=color, linestyle=styles[j % len(styles)], marker=markers[j % len(markers)],
                             markersize=4, capsize=2, label=f"{name} L={L}")
        best = [(L, max(r["seq_per_s"] for r in e["latency"] if r["seq_len"] == L)) for L in seqs
                if any(r["seq_len"] == L for r in e["latency"])]
        axes[1].plot([b[0] for b in best], [b[1] for b in best], color=color, marker="o", label=name)
    axes[0].set_xlabel("batch size")
    axes[0].set_ylabel("p50 latency (ms; bar to p90)")
    batches = sorted({r["batch_size"] for e in models for r in e["latency"]})
    axes[0].set_xscale("log", base=2)
    axes[0].set_xticks(batches, [str(b) for b in batches])
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=6, ncol=2 if len(models) * len(seqs) > 6 else 1)
    axes[1].set_xlabel("sequence length (tokens)")
    axes[1].set_ylabel("best sequences / s (over batch sizes)")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xticks(seqs, [str(L) for L in seqs])
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_bench(result: dict, out: Path) -> str:
    """OUT/bench.json, bench.md and bench.png; the Markdown."""
    folder = OwnedFolder(out)
    folder.claim("bench.json", "bench.md", "bench.png", what="benchmark")
    folder.write_text("bench.json", json.dumps(result, indent=2) + "\n")
    md = bench_markdown(result)
    folder.write_text("bench.md", md + "\n")
    plot_bench(result["models"], folder.folder / "bench.png")
    return md
