"""The paper's comparison on the paper's datasets, offline: examples/shared-data.yaml end to end (not in CI:
about 2-3 hours on 2 cores; re-runs reuse every finished step).

MiniLM fine-tuned for QA on the SQuAD v2 train subset and for sentiment on the IMDB train sample; its int8 and
layer-dropped variants; errors on the SQuAD v2 dev half (official scoring) and the IMDB test sample;
representation on the SQuAD v2 dev half; deep-kNN OOD with NewsQA dev as the challenge set; BERT-Attack on 200
IMDB test reviews with a fitted offline MLM head. Writes benchmarks/results/shared-experiment.json: per-step
times, EM/F1 and accuracy per model, Tables 2 (with intervals) and 3, the noise verdicts, OOD detail, the MLM's
quality, and the measured rates that extrapolate to the paper's full setting.

    python benchmarks/bench_shared_experiment.py [--out runs/shared]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, save  # noqa: E402


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


# (layers, hidden, intermediate) of the paper's six models and of the run's own base
PAPER_MODELS = {"BERT-large": (24, 1024, 4096), "BERT-base": (12, 768, 3072), "DistilBERT": (6, 768, 3072),
                "BERT-medium": (8, 512, 2048), "BERT-mini": (4, 256, 1024), "Tiny-BERT": (2, 128, 512)}
MINILM_L6 = (6, 384, 1536)
PAPER = {"squad_train": 130_319, "squad_dev": 11_873, "imdb_train": 25_000, "attack": 1_000, "qa_epochs": 2,
         "cls_epochs": 2, "qa_length": 384, "qa_stride": 128, "cls_length": 512}


def flops_per_token(shape, seq: int) -> float:
    """Forward FLOPs per token of a BERT encoder: QKV+output projections, the FFN, and attention over seq."""
    layers, d, inter = shape
    return layers * (8 * d * d + 4 * d * inter + 4 * seq * d)


def _qa_tokens(tok, path: Path, max_length: int, stride: int) -> tuple[int, int]:
    from lookalike.data import read_corpus
    from lookalike.tasks.qa import qa_features

    records = list(read_corpus(path))
    return len(records), sum(sum(f["attention_mask"]) for f in qa_features(tok, records, max_length, stride))


def _pair_tokens(tok, path: Path, max_length: int) -> tuple[int, int]:
    """Real tokens of question + context cut to one window (how `embed` reads a QA dataset)."""
    from lookalike.data import read_corpus

    rs = list(read_corpus(path))
    enc = tok([r.text for r in rs], [r.text_pair for r in rs], truncation="only_second", max_length=max_length)
    return len(rs), sum(len(ids) for ids in enc["input_ids"])


def _lengths(tok, path: Path):
    """Untruncated token counts of each text (a cut at L then costs min(n, L) tokens: one tokenizing per file)."""
    import numpy as np

    from lookalike.data import read_corpus

    texts = [r.text for r in read_corpus(path)]
    return np.array([len(ids) for ids in tok(texts, truncation=False)["input_ids"]])


def embed_rate(out: Path, label_prefix: str) -> tuple[int, float]:
    """Real tokens and seconds of a model's embed steps (tokens read from the stores themselves)."""
    import h5py

    tokens, seconds = 0, 0.0
    for done in (out / "steps" / "embed").glob(f"{label_prefix}*/.done.json"):
        with h5py.File(done.parent / "store" / "embeddings.h5", "r") as f:
            tokens += int(f["n_tokens"][:].sum())
        seconds += json.loads(done.read_text())["seconds"]
    return tokens, seconds


def extrapolate(cfg: dict, finetunes: dict, predict_seconds: dict, attacks: dict, base_dir: str,
                embed: tuple[int, float]) -> dict:
    """The paper's full setting on this machine, from the rates measured here: each job's measured MiniLM-L6
    FLOP rate (real tokens x forward FLOPs per token, x3 for training) applied to the paper's token counts
    (measured per question/review on the shared data at the paper's lengths, scaled to the full datasets) and
    each paper model's FLOPs. Assumes the same efficiency at every size: a rough estimate, not a plan."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(base_dir)  # bert-base-uncased's WordPiece vocabulary
    d = {k: v["path"] if isinstance(v, dict) else v for k, v in cfg["datasets"].items()}
    qa_ft = next(v for k, v in finetunes.items() if k.startswith("MiniLM-L6-qa"))
    cls_ft = next(v for k, v in finetunes.items() if k.startswith("MiniLM-L6-sentiment"))
    L, Lcls = qa_ft["max_length"], cls_ft["max_length"]
    n_train, tok_train = _qa_tokens(tok, Path(qa_ft["data"]), L, cfg["steps"]["predict"]["doc_stride"])
    n_dev, tok_dev = _qa_tokens(tok, Path(d["qa_eval"]), L, cfg["steps"]["predict"]["doc_stride"])
    _, tok_train_p = _qa_tokens(tok, Path(qa_ft["data"]), PAPER["qa_length"], PAPER["qa_stride"])
    _, tok_dev_p = _qa_tokens(tok, Path(d["qa_eval"]), PAPER["qa_length"], PAPER["qa_stride"])
    imdb, att_len = _lengths(tok, Path(cls_ft["data"])), _lengths(tok, Path(d["attack"]))
    n_imdb, tok_imdb, tok_imdb_p = len(imdb), imdb.clip(max=Lcls).sum(), imdb.clip(max=PAPER["cls_length"]).sum()
    n_att, tok_att = len(att_len), att_len.clip(max=cfg["steps"]["attack"]["max_length"]).sum()
    tok_att_p = att_len.clip(max=PAPER["cls_length"]).sum()
    rates = {  # FLOP/s achieved by MiniLM-L6 on this machine, per job
        "qa_train": 3 * tok_train * qa_ft["epochs"] * flops_per_token(MINILM_L6, L) / qa_ft["train_seconds"],
        "qa_predict": tok_dev * flops_per_token(MINILM_L6, L) / predict_seconds["qa"],
        "cls_train": 3 * tok_imdb * cls_ft["epochs"] * flops_per_token(MINILM_L6, Lcls) / cls_ft["train_seconds"],
        "embed": embed[0] * flops_per_token(MINILM_L6, cfg["steps"]["embed"]["max_length"]) / embed[1],
    }
    n_tr, tok_tr_e = _pair_tokens(tok, Path(qa_ft["data"]), PAPER["qa_length"])
    n_dv, tok_dv_e = _pair_tokens(tok, Path(d["qa_eval"]), PAPER["qa_length"])
    _, tok_nq_e = _pair_tokens(tok, Path(d["ood_test"]), PAPER["qa_length"])
    att = next(v for k, v in attacks.items() if k.startswith("MiniLM-L6"))
    work = {  # paper-scale real tokens per job
        "qa_train": tok_train_p / n_train * PAPER["squad_train"] * PAPER["qa_epochs"],
        "qa_predict": tok_dev_p / n_dev * PAPER["squad_dev"],
        "cls_train": tok_imdb_p / n_imdb * PAPER["imdb_train"] * PAPER["cls_epochs"],
    }
    models = {}
    for name, shape in PAPER_MODELS.items():
        h = {"qa_train": 3 * work["qa_train"] * flops_per_token(shape, PAPER["qa_length"]) / rates["qa_train"],
             "qa_predict": work["qa_predict"] * flops_per_token(shape, PAPER["qa_length"]) / rates["qa_predict"],
             "cls_train": 3 * work["cls_train"] * flops_per_token(shape, PAPER["cls_length"]) / rates["cls_train"]}
        # embedding SQuAD train (the bank) + dev (before and after fine-tuning) + NewsQA dev, one window each
        h["embed"] = ((PAPER["squad_train"] * tok_tr_e / n_tr + 2 * PAPER["squad_dev"] * tok_dv_e / n_dv + tok_nq_e)
                      * flops_per_token(shape, PAPER["qa_length"]) / rates["embed"])
        # the attack's time per review scales with the target's cost per query (whole reviews at 512 tokens)
        h["attack"] = (att["seconds_per_example"] * PAPER["attack"] * (tok_att_p / n_att)
                       * flops_per_token(shape, PAPER["cls_length"])
                       / ((tok_att / n_att) * flops_per_token(MINILM_L6, cfg["steps"]["attack"]["max_length"])))
        models[name] = {k: round(v / 3600, 1) for k, v in h.items()} | {"total_hours": round(sum(h.values()) / 3600, 1)}
    return {"method": " ".join(extrapolate.__doc__.split()),
            "measured_flop_rates_gflops": {k: round(v / 1e9, 2) for k, v in rates.items()},
            "tokens_per_item": {f"squad_train_at_{L}": tok_train / n_train,
                                "squad_train_at_384": tok_train_p / n_train, f"squad_dev_at_{L}": tok_dev / n_dev,
                                "squad_dev_at_384": tok_dev_p / n_dev, f"imdb_at_{Lcls}": tok_imdb / n_imdb,
                                "imdb_at_512": tok_imdb_p / n_imdb},
            "paper_setting": PAPER, "hours_on_this_machine": models,
            "all_six_models_hours": round(sum(m["total_hours"] for m in models.values()), 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "runs" / "shared"))
    ap.add_argument("--config", default=str(ROOT / "examples" / "shared-data.yaml"))
    ap.add_argument("--note", action="append", default=[],
                    help="a fact about this run the files cannot show (e.g. a pause), kept in the results")
    ap.add_argument("--paused", action="append", default=[], metavar="STEP/LABEL=SECONDS",
                    help="a step that was paused (SIGSTOP) for SECONDS, e.g. finetune/MiniLM-L6-qa=2593: its time "
                         "is corrected and the fact kept")
    args = ap.parse_args()
    paused = {k: float(v) for k, v in (a.split("=", 1) for a in args.paused)}
    import yaml

    from lookalike.experiment import run_experiment
    from lookalike.models import resolve_model

    t0 = time.perf_counter()
    report = run_experiment(args.config, args.out, echo=lambda s: print(s, flush=True))
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    cfg = yaml.safe_load(Path(args.config).read_text())
    here = Path(args.config).resolve().parent
    for role, v in cfg["datasets"].items():  # paths in the file are relative to it
        path = v["path"] if isinstance(v, dict) else v
        if not Path(path).is_absolute() and (here / path).exists():
            cfg["datasets"][role] = str(here / path)
    steps = {}
    for done in sorted((out / "steps").glob("*/*/.done.json")):
        d = json.loads(done.read_text())
        pause = paused.get(f"{d['step']}/{d['label']}", 0.0)
        steps.setdefault(d["step"], {})[d["label"]] = round(d["seconds"] - pause, 2)
    finetunes = {}
    for info in (out / "steps" / "finetune").glob("*/model/lookalike-finetune.json"):
        d = json.loads(info.read_text())
        label = json.loads((info.parent.parent / ".done.json").read_text())["label"]
        f = {k: d.get(k) for k in ("task", "n_records", "n_features", "epochs", "max_length", "keep_layers",
                                   "train_loss", "train_seconds")}
        f["data"] = d["data"]["path"]
        f["train_seconds"] = round(f["train_seconds"] - paused.get(f"finetune/{label}", 0.0), 2)
        f["features_per_s"] = f["n_features"] * f["epochs"] / f["train_seconds"]
        finetunes[label] = f
    attacks = {}
    for s in (out / "steps" / "attack").glob("*/summary.json"):
        d = json.loads(s.read_text())
        run_n = d.get("attacked_this_run", d["n"])  # a resumed attack timed only what it attacked
        attacks[s.parent.name] = {"n": d["n"], "attacked_this_run": run_n, "seconds": d["seconds_this_run"],
                                  "seconds_per_example": d["seconds_this_run"] / run_n if run_n else None,
                                  "target_queries_per_s": d["queries_per_s"]}
    mlm = next((_load(p) for p in (out / "steps" / "fit_mlm").glob("*/mlm/lookalike-mlm.json")), None)
    summary = _load(report / "summary.json") or {}
    save("shared-experiment", {
        "config": str(Path(args.config).relative_to(ROOT)) if Path(args.config).is_relative_to(ROOT) else args.config,
        "seconds_this_run": round(seconds, 1), "step_seconds": steps, "finetune": finetunes,
        "qa_metrics": summary.get("qa_metrics"), "cls_metrics": summary.get("cls_metrics"),
        "table2": summary.get("table2"), "differences": summary.get("differences"),
        "ood_detail": summary.get("ood_detail"), "table3": summary.get("table3"), "attack_rates": attacks,
        "mlm": {k: mlm.get(k) for k in ("fit_texts", "fit_positions", "eval_positions", "fill_mask_accuracy",
                                        "untrained_head_accuracy", "seconds")} if mlm else None,
        "figure1": {k: summary.get(k) for k in ("figure1a", "figure1b", "figure1c")},
        "report": str(report / "report.md"), "notes": args.note,
        "paused_seconds_removed": paused,
        "paper_extrapolation": extrapolate(cfg, finetunes, {"qa": steps["predict"]["MiniLM-L6-qa"]}, attacks,
                                           resolve_model("minilm"), embed_rate(out, "MiniLM-L6-"))})


if __name__ == "__main__":
    main()
