"""One command from a config to a report: export -> embed -> knn/ood -> predict -> attack -> analysis.

Every step's output lives under `OUT/steps/<step>/<label>-<key>/`, where the key is a hash of the step's
inputs (upstream artifact hashes, dataset fingerprints) and parameters. A re-run skips steps whose
output is marked done; changing a parameter changes only the keys of the steps that depend on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import InputError

log = logging.getLogger(__name__)

DONE = ".done.json"


def _key(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")[:60] or "x"


class StepCache:
    """Content-keyed step outputs with an explicit done marker (written last)."""

    def __init__(self, root: Path, echo: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.echo = echo or (lambda s: log.info(s))
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def run(self, step: str, label: str, key_parts: dict, fn: Callable[[Path], Any]) -> Path:
        key = _key({"step": step, **key_parts})
        # the key alone identifies the output (two models sharing a checkpoint share its fine-tuning);
        # the label only makes folder names readable
        for existing in sorted((self.root / "steps" / step).glob(f"*-{key}")):
            if (existing / DONE).exists():
                self.skipped.append(f"{step}:{label}")
                return existing
        out = self.root / "steps" / step / f"{_slug(label)}-{key}"
        done = out / DONE
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self.echo(f"[{step}] {label} ...")
        fn(out)
        (done).write_text(json.dumps({"step": step, "label": label, "key": key, "inputs": key_parts,
                                      "seconds": round(time.perf_counter() - t0, 2)}, default=str, indent=1))
        self.ran.append(f"{step}:{label}")
        return out


def _file_id(path: str) -> str:
    """Cheap identity of a local model/corpus path (size + mtime of its files); the id itself for hub names."""
    p = Path(path)
    if not p.exists():
        return f"hub:{path}"
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    return _key([(str(f.relative_to(p) if p.is_dir() else f.name), f.stat().st_size, int(f.stat().st_mtime))
                 for f in files if DONE not in f.name])


# --------------------------------------------------------------------------- config

@dataclass
class ModelSpec:
    name: str
    base: str | None = None
    qa: Any = None
    sentiment: Any = None
    variant: dict = field(default_factory=dict)


VARIANT_KEYS = {"quantize", "per_channel", "fp16", "keep_layers", "optimize"}


def parse_config(cfg: dict, base_dir: Path) -> tuple[list[ModelSpec], dict, dict]:
    """Models (with `like:` inheritance), datasets and step parameters; paths relative to the config file."""
    if not isinstance(cfg, dict) or "models" not in cfg:
        raise InputError("experiment config needs a 'models' list", field="models")
    from .models import resolve_model

    def resolve_path(v):
        if isinstance(v, str) and (v.startswith("./") or v.startswith("../")):
            return str((base_dir / v).resolve())
        return v

    specs: dict[str, ModelSpec] = {}
    for i, m in enumerate(cfg["models"]):
        if not isinstance(m, dict) or "name" not in m:
            raise InputError("each model needs a 'name'", record=f"models[{i}]", field="name")
        parent = specs.get(m["like"]) if "like" in m else None
        if "like" in m and parent is None:
            raise InputError(f"'like: {m['like']}' names no earlier model", record=f"models[{i}]", field="like")
        variant = dict(parent.variant if parent else {})
        variant.update(m.get("variant") or {})
        unknown = set(variant) - VARIANT_KEYS
        if unknown:
            raise InputError(f"unknown variant keys {sorted(unknown)} (known: {sorted(VARIANT_KEYS)})",
                             record=f"models[{i}]", field="variant")
        base = m.get("base", parent.base if parent else None)
        spec = ModelSpec(m["name"], resolve_model(resolve_path(base)) if isinstance(base, str) else base,
                         m.get("qa", parent.qa if parent else None),
                         m.get("sentiment", parent.sentiment if parent else None), variant)
        for role in ("qa", "sentiment"):
            v = getattr(spec, role)
            if isinstance(v, str):
                setattr(spec, role, resolve_model(resolve_path(v)))
            elif isinstance(v, dict) and "finetune" in v:
                ft = dict(v["finetune"])
                ft["data"] = resolve_path(ft.get("data"))
                ft["model"] = resolve_model(resolve_path(ft.get("model", spec.base)))
                setattr(spec, role, {"finetune": ft})
        if spec.name in specs:
            raise InputError(f"duplicate model name {spec.name!r}", record=f"models[{i}]", field="name")
        specs[spec.name] = spec
    datasets = {}
    for name, d in (cfg.get("datasets") or {}).items():
        d = {"path": d} if isinstance(d, str) else dict(d)
        if "path" not in d:
            raise InputError("dataset needs a 'path'", record=f"datasets.{name}", field="path")
        d["path"] = resolve_path(d["path"])
        datasets[name] = d
    return list(specs.values()), datasets, dict(cfg.get("steps") or {})


PREDICT_OPTIONS = {"qa": {"max_length", "doc_stride", "n_best", "max_answer_length", "null_score_diff_threshold",
                          "batch_tokens"},
                   "cls": {"max_length", "batch_tokens"}}
READER_KEYS = ("format", "text_field", "pair_field", "id_field", "label_field", "split", "limit", "every", "offset")


def reader_kwargs(d: dict) -> dict:
    out = {k: d[k] for k in READER_KEYS if k in d and k != "format"}
    if "format" in d:
        out["fmt"] = d["format"]
    return out


# --------------------------------------------------------------------------- the runner

class Experiment:
    def __init__(self, cfg: dict, out: Path, base_dir: Path = Path("."), echo: Callable[[str], None] | None = None,
                 device: str = "auto"):
        self.cfg = cfg
        self.out = Path(out)
        self.models, self.datasets, self.steps = parse_config(cfg, base_dir)
        self.cache = StepCache(self.out, echo)
        self.echo = self.cache.echo
        self.device = device
        self.artifacts: dict[str, dict] = {m.name: {} for m in self.models}

    # ---- steps
    def checkpoint(self, spec: ModelSpec, role: str) -> str | None:
        """Path or hub id of the model's checkpoint for a role, fine-tuning it first if asked."""
        v = spec.base if role == "base" else getattr(spec, role)
        if isinstance(v, dict) and "finetune" in v:
            ft = v["finetune"]
            task = "qa" if role == "qa" else "cls"
            params = {k: ft[k] for k in ft if k not in ("model", "data")}
            key = {"model": ft["model"], "model_id": _file_id(ft["model"]), "data": ft["data"],
                   "data_id": _file_id(ft["data"]), "task": task, **params}

            def run(out: Path):
                from .exporters.finetune import finetune

                finetune(task, ft["model"], ft["data"], out / "model", **params)

            return str(self.cache.run("finetune", f"{spec.name}-{role}", key, run) / "model")
        return v

    def export(self, spec: ModelSpec, role: str) -> Path | None:
        task = {"base": "feature-extraction", "encoder": "feature-extraction", "qa": "question-answering",
                "sentiment": "text-classification"}[role]
        # "encoder": the QA fine-tuned checkpoint's encoder, for the paper's "after fine-tuning" columns
        src = self.checkpoint(spec, "qa" if role == "encoder" else role)
        if src is None:
            return None
        v = spec.variant
        # "fusion": what an unset `optimize` means; exports cached before fusion became the default differ
        key = {"source": src, "source_id": _file_id(src), "task": task, "variant": v, "fusion": "auto"}

        def run(out: Path):
            from .exporters import export

            export(src, out / "model", task, overwrite=True, quantize=v.get("quantize"),
                   per_channel=bool(v.get("per_channel")), fp16=bool(v.get("fp16")),
                   keep_layers=v.get("keep_layers"), optimize=v.get("optimize"))

        return self.cache.run("export", f"{spec.name}-{role}", key, run) / "model"

    def embed(self, model_dir: Path, dataset: str, label: str) -> Path:
        from .engine.pipeline import corpus_fingerprint

        d = self.datasets[dataset]
        params = dict(self.steps.get("embed") or {})
        manifest = json.loads((model_dir / "lookalike.json").read_text())
        key = {"model_sha256": manifest["sha256"], "data": d, "data_fp": corpus_fingerprint(d["path"]), **params}

        def run(out: Path):
            from .engine import embed

            embed(model_dir, d["path"], out / "store", device=self.device, **reader_kwargs(d), **params)

        return self.cache.run("embed", label, key, run) / "store"

    def knn(self, store: Path, label: str) -> Path:
        p = dict(self.steps.get("knn") or {})
        kmax = max([p.get("k", 10)] + list(p.get("sweep", [])))
        key = {"store": _store_key(store), "k": kmax, "index": p.get("index", "flat")}

        def run(out: Path):
            from .analysis.knn import knn_self
            from .engine import open_store

            knn_self(open_store(store), kmax, index=p.get("index", "flat")).save(out / "knn.h5")

        return self.cache.run("knn", label, key, run) / "knn.h5"

    def ood(self, stores: dict[str, Path], label: str) -> Path:
        p = dict(self.steps.get("ood") or {})
        ks = sorted(set([p.get("k", 10)] + list(p.get("sweep", []))))
        key = {"stores": {k: _store_key(v) for k, v in stores.items()}, "ks": ks, "tpr": p.get("tpr", 0.95),
               "val_fraction": p.get("val_fraction", 0.1), "seed": p.get("seed", 0)}

        def run(out: Path):
            from .analysis.ood import deep_knn_ood
            from .engine import open_store

            res = deep_knn_ood(open_store(stores["train"]), open_store(stores["test"]), ks, tpr=p.get("tpr", 0.95),
                               val=open_store(stores["val"]) if "val" in stores else None,
                               in_test=open_store(stores["in_test"]) if "in_test" in stores else None,
                               val_fraction=p.get("val_fraction", 0.1), seed=p.get("seed", 0))
            res.save(out / "ood.json")

        return self.cache.run("ood", label, key, run) / "ood.json"

    def latency(self, model_dir: Path, label: str) -> Path:
        p = dict(self.steps.get("latency") or {})
        manifest = json.loads((model_dir / "lookalike.json").read_text())
        key = {"model_sha256": manifest["sha256"], **p, "device": self.device}

        def run(out: Path):
            from .engine import OnnxModel
            from .engine.bench import latency

            m = OnnxModel(model_dir, device=self.device)
            rows = latency(m, p.get("batch_sizes", [1, 8]), p.get("seq_lengths", [128]), repeat=p.get("repeat", 10))
            (out / "latency.json").write_text(json.dumps({"device": m.device, "rows": rows}, indent=1))

        return self.cache.run("latency", label, key, run) / "latency.json"

    def predict(self, model_dir: Path, dataset: str, label: str, task: str) -> Path:
        d = self.datasets[dataset]
        p = dict(self.steps.get("predict") or {})
        manifest = json.loads((model_dir / "lookalike.json").read_text())
        from .engine.pipeline import corpus_fingerprint

        key = {"model_sha256": manifest["sha256"], "data": d, "data_fp": corpus_fingerprint(d["path"]), "task": task,
               **p}

        def run(out: Path):
            from .analysis.scoring import evaluate
            from .engine.predict import predict

            options = {k: v for k, v in p.items() if k in PREDICT_OPTIONS[task]}
            predict(model_dir, d["path"], out, task=task, device=self.device, reader=reader_kwargs(d), **options)
            evaluate(d["path"], out / "predictions.json", task=task, reader=reader_kwargs(d), out=out,
                     na_probs=out / "null_odds.json" if task == "qa" else None, labels=manifest.get("labels") and
                     {int(k): v for k, v in manifest["labels"].items()})

        return self.cache.run("predict", label, key, run)

    def attack(self, model_dir: Path, label: str) -> Path:
        d = self.datasets["attack"]
        p = dict(self.steps.get("attack") or {})
        manifest = json.loads((model_dir / "lookalike.json").read_text())
        key = {"model_sha256": manifest["sha256"], "data": d, "data_id": _file_id(d["path"]), **p}

        def run(out: Path):
            from .attack import run_attack

            run_attack(model_dir, d["path"], out, reader=reader_kwargs(d), device=self.device, **p)

        return self.cache.run("attack", label, key, run)

    # ---- whole run
    def run(self) -> Path:
        from .analysis.tables import build_report

        t0 = time.perf_counter()
        names = [m.name for m in self.models]
        for spec in self.models:
            a = self.artifacts[spec.name]
            base = self.export(spec, "base")
            encoder = self.export(spec, "encoder")
            a["manifest"] = json.loads(((base or encoder) / "lookalike.json").read_text()) if (base or encoder) else None
            if "representation" in self.datasets:
                for role, model_dir in (("before", base), ("after", encoder)):
                    if model_dir is not None:
                        store = self.embed(model_dir, "representation", f"{spec.name}-{role}-representation")
                        a[f"knn_{role}"] = self.knn(store, f"{spec.name}-{role}")
            ood_model = encoder or base
            if ood_model is not None and "ood_train" in self.datasets and "ood_test" in self.datasets:
                stores = {role: self.embed(ood_model, ds, f"{spec.name}-{ds}")
                          for role, ds in (("train", "ood_train"), ("test", "ood_test"), ("val", "ood_val"),
                                           ("in_test", "ood_in_test")) if ds in self.datasets}
                a["ood"] = self.ood(stores, spec.name)
                a["ood_encoder"] = "fine-tuned (QA) encoder" if encoder else "pre-trained encoder"
            if "latency" in self.steps and (base or encoder):
                a["latency"] = self.latency(base or encoder, spec.name)
            if "qa_eval" in self.datasets:
                qa = self.export(spec, "qa")
                if qa is not None:
                    a["predict_qa"] = self.predict(qa, "qa_eval", f"{spec.name}-qa", "qa")
            sentiment = self.export(spec, "sentiment") if ("attack" in self.datasets or "cls_eval" in self.datasets) else None
            if sentiment is not None and "cls_eval" in self.datasets:
                a["predict_cls"] = self.predict(sentiment, "cls_eval", f"{spec.name}-cls", "cls")
            if sentiment is not None and "attack" in self.datasets and self.steps.get("attack") is not None:
                a["attack"] = self.attack(sentiment, spec.name)
        report_dir = self.out / "report"
        build_report(self, names, report_dir, seconds=time.perf_counter() - t0)
        return report_dir


def _store_key(store: Path) -> str:
    m = json.loads((Path(store) / "manifest.json").read_text())
    return _key([s["sha256"] for s in m["shards"]])


def load_config(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.exists():
        raise InputError("no such experiment file", path=p)
    try:
        cfg = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=p,
                         record=f"line {mark.line + 1}" if mark else None) from None
    return cfg


def run_experiment(path: str | Path, out: str | Path | None = None, echo=None, device: str = "auto") -> Path:
    cfg = load_config(path)
    out = Path(out or cfg.get("out") or Path(path).with_suffix(""))
    return Experiment(cfg, out, Path(path).parent, echo=echo, device=device).run()
