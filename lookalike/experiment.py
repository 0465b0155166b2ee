"""One command from a config to a report: export -> embed -> knn/ood -> predict -> attack -> analysis.

Every step's output lives under `OUT/steps/<step>/<label>-<key>/`, where the key is a hash of the step's
inputs (upstream artifact hashes, corpus fingerprints) and parameters. A re-run skips steps whose output is
marked done; changing a parameter changes only the keys of the steps that depend on it.

The config is checked before anything runs: unknown keys (at the top, in a model, a dataset or a step) are
errors naming the nearest valid key, values are typed (`lookalike.params`), and where/how to run (backend,
Ray address, device) is not a config key: it comes from the command line only.
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

from .data import CorpusSpec
from .data.spec import SPEC_KEYS, unknown_key_message
from .errors import InputError
from .exporters.manifest import load_manifest
from .params import (STEPS, AttackParams, EmbedParams, FinetuneParams, KnnParams, LatencyParams, OodParams,
                     PredictParams, as_key, parse_params)

log = logging.getLogger(__name__)

DONE = ".done.json"
TOP_KEYS = ("title", "description", "out", "models", "datasets", "steps")
MODEL_KEYS = ("name", "like", "base", "qa", "sentiment", "variant")
VARIANT_KEYS = ("quantize", "int8_scheme", "per_channel", "fp16", "keep_layers", "optimize")
# dataset roles: what each one feeds
DATASET_ROLES = {
    "representation": "kNN representation before/after fine-tuning",
    "ood_train": "deep-kNN bank (in-distribution)",
    "ood_val": "threshold calibration (in-distribution)",
    "ood_in_test": "held-out in-distribution points (AUROC, FPR)",
    "ood_test": "challenge set scored for OOD",
    "qa_eval": "QA prediction errors",
    "cls_eval": "classification prediction errors",
    "attack": "BERT-Attack examples",
    "mlm_fit": "text to fit the attack's masked-LM head on (with steps.attack.mlm: fit)",
}


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
        self.seconds: dict[str, float] = {}

    def run(self, step: str, label: str, key_parts: dict, fn: Callable[[Path], Any]) -> Path:
        key = _key({"step": step, **key_parts})
        # the key alone identifies the output (two models sharing a checkpoint share its fine-tuning);
        # the label only makes folder names readable
        for existing in sorted((self.root / "steps" / step).glob(f"*-{key}")):
            if (existing / DONE).exists():
                self.skipped.append(f"{step}:{label}")
                return existing
        out = self.root / "steps" / step / f"{_slug(label)}-{key}"
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self.echo(f"[{step}] {label} ...")
        fn(out)
        seconds = round(time.perf_counter() - t0, 2)
        self.seconds[step] = self.seconds.get(step, 0.0) + seconds
        from .files import atomic_write_json

        atomic_write_json(out / DONE, json.loads(json.dumps({"step": step, "label": label, "key": key,
                                                             "inputs": key_parts, "seconds": seconds}, default=str)))
        self.ran.append(f"{step}:{label}")
        return out


def _file_id(path: str) -> str:
    """Cheap identity of a local model path (size + mtime of its files); the id itself for hub names."""
    p = Path(path)
    if not p.exists():
        return f"hub:{path}"
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    return _key([(str(f.relative_to(p) if p.is_dir() else f.name), f.stat().st_size, int(f.stat().st_mtime))
                 for f in files if DONE not in f.name])


# --------------------------------------------------------------------------- config

@dataclass
class Finetune:
    model: str
    corpus: CorpusSpec
    params: FinetuneParams
    explicit_model: bool = False  # `model:` given; else the model's own base (also when inherited with like:)


@dataclass
class ModelSpec:
    name: str
    base: str | None = None
    qa: str | Finetune | None = None
    sentiment: str | Finetune | None = None
    variant: dict = field(default_factory=dict)


def _refuse_unknown(d: dict, valid, where: str) -> None:
    for k in d:
        if k not in valid:
            raise InputError(unknown_key_message(k, valid), record=where, field=str(k))


def _parse_finetune(v: dict, where: str, base: str | None, resolve_path, resolve_model) -> Finetune:
    valid = {"model", "data", *SPEC_KEYS[1:], *FinetuneParams.__dataclass_fields__}
    if not isinstance(v, dict):
        raise InputError("expected a mapping", record=where)
    _refuse_unknown(v, valid, where)
    if "data" not in v:
        raise InputError("fine-tuning needs 'data'", record=where, field="data")
    spec = {k: v[k] for k in SPEC_KEYS[1:] if k in v}
    data = v["data"]
    data = {**data, **spec} if isinstance(data, dict) else {"path": data, **spec}
    data["path"] = resolve_path(data.get("path"))
    params = {k: x for k, x in v.items() if k in FinetuneParams.__dataclass_fields__}
    model = v.get("model", base)
    if model is None:
        raise InputError("fine-tuning needs a 'model' (or the model's 'base')", record=where, field="model")
    return Finetune(resolve_model(resolve_path(model)), CorpusSpec.from_dict(data, where),
                    parse_params(FinetuneParams, params, where), explicit_model="model" in v)


def parse_config(cfg, base_dir: Path) -> tuple[list[ModelSpec], dict[str, CorpusSpec], dict]:
    """Models (with `like:` inheritance), datasets and typed step parameters; paths relative to the config."""
    if not isinstance(cfg, dict):
        raise InputError(f"an experiment file is a mapping with a 'models' list, got {type(cfg).__name__}")
    _refuse_unknown(cfg, TOP_KEYS, "experiment")
    if not isinstance(cfg.get("models"), list) or not cfg["models"]:
        raise InputError("expected a non-empty list of models", record="experiment", field="models")
    from .models import resolve_model

    def resolve_path(v):
        if isinstance(v, str) and (v.startswith("./") or v.startswith("../")):
            return str((base_dir / v).resolve())
        return v

    specs: dict[str, ModelSpec] = {}
    for i, m in enumerate(cfg["models"]):
        where = f"models[{i}]"
        if not isinstance(m, dict) or "name" not in m:
            raise InputError("each model needs a 'name'", record=where, field="name")
        _refuse_unknown(m, MODEL_KEYS, where)
        parent = specs.get(m["like"]) if "like" in m else None
        if "like" in m and parent is None:
            raise InputError(f"'like: {m['like']}' names no earlier model", record=where, field="like")
        variant = dict(parent.variant if parent else {})
        if not isinstance(m.get("variant") or {}, dict):
            raise InputError("expected a mapping", record=where, field="variant")
        variant.update(m.get("variant") or {})
        _refuse_unknown(variant, VARIANT_KEYS, f"{where}.variant")
        base = m.get("base", parent.base if parent else None)
        spec = ModelSpec(m["name"], resolve_model(resolve_path(base)) if isinstance(base, str) else base,
                         variant=variant)
        for role in ("qa", "sentiment"):
            v = m.get(role, getattr(parent, role) if parent else None)
            if isinstance(v, str):
                v = resolve_model(resolve_path(v))
            elif isinstance(v, dict):
                if set(v) != {"finetune"}:
                    raise InputError("expected a checkpoint (path or hub id) or {finetune: {...}}",
                                     record=f"{where}.{role}")
                v = _parse_finetune(v["finetune"], f"{where}.{role}.finetune", spec.base, resolve_path, resolve_model)
            elif isinstance(v, Finetune) and not v.explicit_model:
                v = Finetune(spec.base, v.corpus, v.params)  # an inherited recipe trains this model's own base
            setattr(spec, role, v)
        if spec.name in specs:
            raise InputError(f"duplicate model name {spec.name!r}", record=where, field="name")
        specs[spec.name] = spec
    datasets = {}
    raw = cfg.get("datasets") or {}
    if not isinstance(raw, dict):
        raise InputError("expected a mapping of dataset roles", record="experiment", field="datasets")
    for name, d in raw.items():
        where = f"datasets.{name}"
        if name not in DATASET_ROLES:
            raise InputError(unknown_key_message(name, DATASET_ROLES), record="datasets", field=name)
        d = {"path": d} if isinstance(d, str) else dict(d) if isinstance(d, dict) else d
        if isinstance(d, dict) and "path" in d:
            d["path"] = resolve_path(d["path"])
        datasets[name] = CorpusSpec.from_dict(d, where)
    steps_raw = cfg.get("steps") or {}
    if not isinstance(steps_raw, dict):
        raise InputError("expected a mapping of steps", record="experiment", field="steps")
    _refuse_unknown(steps_raw, STEPS, "steps")
    steps = {name: parse_params(cls, steps_raw.get(name), f"steps.{name}") for name, cls in STEPS.items()}
    steps["_given"] = set(steps_raw)
    return list(specs.values()), datasets, steps


# --------------------------------------------------------------------------- the runner

class Experiment:
    def __init__(self, cfg: dict, out: Path, base_dir: Path = Path("."), echo: Callable[[str], None] | None = None,
                 device: str = "auto"):
        self.cfg = cfg
        self.out = Path(out)
        self.models, self.datasets, steps = parse_config(cfg, base_dir)
        self.given = steps.pop("_given")
        self.embed_p: EmbedParams = steps["embed"]
        self.knn_p: KnnParams = steps["knn"]
        self.ood_p: OodParams = steps["ood"]
        self.predict_p: PredictParams = steps["predict"]
        self.attack_p: AttackParams = steps["attack"]
        self.latency_p: LatencyParams = steps["latency"]
        self.cache = StepCache(self.out, echo)
        self.echo = self.cache.echo
        self.device = device
        self.paths: dict[str, dict] = {m.name: {} for m in self.models}

    # ---- steps
    def checkpoint(self, spec: ModelSpec, role: str) -> str | None:
        """Path or hub id of the model's checkpoint for a role, fine-tuning it first if asked.

        A layer-dropped variant is fine-tuned after the drop (a compressed model trained on the task, as the
        paper's are); quantisation applies to the fine-tuned weights.
        """
        v = spec.base if role == "base" else getattr(spec, role)
        if isinstance(v, Finetune):
            task = "qa" if role == "qa" else "cls"
            keep = spec.variant.get("keep_layers")
            params = FinetuneParams(**{**as_key(v.params), "keep_layers": tuple(keep) if keep else None})
            key = {"model": v.model, "model_id": _file_id(v.model), "data": v.corpus.as_dict(),
                   "data_fp": v.corpus.fingerprint(), "task": task, **as_key(params)}

            def run(out: Path):
                from .finetune import finetune

                finetune(task, v.model, v.corpus, out / "model", params, progress=False)

            return str(self.cache.run("finetune", f"{spec.name}-{role}", key, run) / "model")
        return v

    def finetuned_role(self, spec: ModelSpec) -> str | None:
        """Whose encoder is "after fine-tuning": the QA model's (the paper), else the classifier's."""
        return "qa" if spec.qa is not None else "sentiment" if spec.sentiment is not None else None

    def export(self, spec: ModelSpec, role: str) -> Path | None:
        task = {"base": "feature-extraction", "encoder": "feature-extraction", "qa": "question-answering",
                "sentiment": "text-classification"}[role]
        # "encoder": the fine-tuned checkpoint's encoder, for the paper's "after fine-tuning" columns
        trained_role = self.finetuned_role(spec) if role == "encoder" else role
        if trained_role is None:
            return None
        src = self.checkpoint(spec, trained_role)
        if src is None:
            return None
        v = dict(spec.variant)
        if trained_role != "base" and isinstance(getattr(spec, trained_role), Finetune):
            v.pop("keep_layers", None)  # dropped before fine-tuning
        # "fusion": what an unset `optimize` means; exports cached before fusion became the default differ
        key = {"source": src, "source_id": _file_id(src), "task": task, "variant": v, "fusion": "auto"}

        def run(out: Path):
            from .exporters import export

            export(src, out / "model", task, overwrite=True, quantize=v.get("quantize"),
                   per_channel=bool(v.get("per_channel")), fp16=bool(v.get("fp16")),
                   keep_layers=v.get("keep_layers"), optimize=v.get("optimize"), int8_scheme=v.get("int8_scheme"))

        return self.cache.run("export", f"{spec.name}-{role}", key, run) / "model"

    def tokens(self, model_dir: Path, dataset: str) -> Path:
        """A dataset tokenized once per tokenizer: every export that shares the tokenizer embeds from it."""
        import transformers

        from .engine.tokens import tokenize_corpus, tokenizer_fingerprint

        corpus = self.datasets[dataset]
        tok = transformers.AutoTokenizer.from_pretrained(model_dir, use_fast=True)
        max_length = min(self.embed_p.max_length, int(load_manifest(model_dir).get("max_position_embeddings") or 512))
        key = {"tokenizer": tokenizer_fingerprint(tok), "max_length": max_length, "data": corpus.as_dict(),
               "data_fp": corpus.fingerprint()}

        def run(out: Path):
            tokenize_corpus(tok, corpus, out / "tokens", max_length=max_length, progress=False)

        return self.cache.run("tokenize", dataset, key, run) / "tokens"

    def embed(self, model_dir: Path, dataset: str, label: str) -> Path:
        corpus = self.datasets[dataset]
        manifest = load_manifest(model_dir)
        key = {"model_sha256": manifest["sha256"], "data": corpus.as_dict(), "data_fp": corpus.fingerprint(),
               **as_key(self.embed_p)}

        def run(out: Path):
            from .engine import embed

            embed(model_dir, corpus, out / "store", self.embed_p, device=self.device, progress=False,
                  tokens=self.tokens(model_dir, dataset))

        return self.cache.run("embed", label, key, run) / "store"

    def knn(self, store: Path, label: str) -> Path:
        p = self.knn_p
        key = {"store": _store_key(store), "k": p.k_max, "index": p.index}

        def run(out: Path):
            from .analysis.knn import knn_self
            from .engine import open_store

            knn_self(open_store(store), p.k_max, index=p.index, block_rows=p.block_rows).save(out / "knn.h5")

        return self.cache.run("knn", label, key, run) / "knn.h5"

    def ood(self, stores: dict[str, Path], label: str) -> Path:
        p = self.ood_p
        key = {"stores": {k: _store_key(v) for k, v in stores.items()}, "ks": p.ks, "tpr": p.tpr,
               "val_fraction": p.val_fraction, "seed": p.seed}

        def run(out: Path):
            from .analysis.ood import deep_knn_ood
            from .engine import open_store

            res = deep_knn_ood(open_store(stores["train"]), open_store(stores["test"]), p.ks, tpr=p.tpr,
                               val=open_store(stores["val"]) if "val" in stores else None,
                               in_test=open_store(stores["in_test"]) if "in_test" in stores else None,
                               val_fraction=p.val_fraction, seed=p.seed)
            res.save(out / "ood.json")

        return self.cache.run("ood", label, key, run) / "ood.json"

    def latency(self, model_dir: Path, label: str) -> Path:
        manifest = load_manifest(model_dir)
        key = {"model_sha256": manifest["sha256"], **as_key(self.latency_p), "device": self.device}

        def run(out: Path):
            from .engine import OnnxModel
            from .engine.bench import latency
            from .files import atomic_write_json

            m = OnnxModel(model_dir, device=self.device)
            rows = latency(m, self.latency_p.batch_sizes, self.latency_p.seq_lengths, repeat=self.latency_p.repeat)
            atomic_write_json(out / "latency.json", {"device": m.device, "rows": rows})

        return self.cache.run("latency", label, key, run) / "latency.json"

    def predict(self, model_dir: Path, dataset: str, label: str, task: str) -> Path:
        corpus = self.datasets[dataset]
        manifest = load_manifest(model_dir)
        key = {"model_sha256": manifest["sha256"], "data": corpus.as_dict(), "data_fp": corpus.fingerprint(),
               "task": task, **as_key(self.predict_p)}

        def run(out: Path):
            from .analysis.scoring import evaluate
            from .engine.predict import predict
            from .exporters.manifest import labels

            predict(model_dir, corpus, out, task=task, params=self.predict_p, device=self.device)
            evaluate(corpus, out / "predictions.json", task=task, out=out, f1_below=self.predict_p.f1_below,
                     na_probs=out / "null_odds.json" if task == "qa" else None, labels=labels(manifest) or None)

        return self.cache.run("predict", label, key, run)

    def attack_mlm(self) -> str:
        """The attack's masked-LM: as given, or (mlm: fit) the reference model's base encoder with a head fitted on
        the `mlm_fit` dataset and measured on the attack texts (held out from the fit)."""
        if self.attack_p.mlm != "fit":
            from .models import resolve_model

            return resolve_model(self.attack_p.mlm)
        if "mlm_fit" not in self.datasets:
            raise InputError("steps.attack.mlm: fit needs a datasets.mlm_fit entry (text to fit the head on)",
                             field="mlm")
        base = self.models[0].base
        fit, held = self.datasets["mlm_fit"], self.datasets["attack"]
        key = {"base": base, "base_id": _file_id(base), "fit": fit.as_dict(), "fit_fp": fit.fingerprint(),
               "eval": held.as_dict(), "eval_fp": held.fingerprint(), "max_length": self.attack_p.max_length}

        def run(out: Path):
            from .mlm import fit_mlm_head

            fit_mlm_head(base, fit, out / "mlm", eval_corpus=held, max_length=min(self.attack_p.max_length, 256))

        return str(self.cache.run("fit_mlm", "attack-mlm", key, run) / "mlm")

    def similarity_encoder(self) -> Path | None:
        """USE's offline stand-in for the attack's similarity constraint: the reference model's pre-trained
        encoder, int8 (measured: the same attack outcomes as fp32 at 0.7x its time; at threshold 0.2 the
        constraint rarely binds)."""
        ref = self.models[0]
        if ref.base is None or self.attack_p.similarity != "engine":
            return None
        src = ref.base
        key = {"source": src, "source_id": _file_id(src), "task": "feature-extraction",
               "variant": {"quantize": "int8", "per_channel": True}, "fusion": "auto"}

        def run(out: Path):
            from .exporters import export

            export(src, out / "model", "feature-extraction", quantize="int8", per_channel=True)

        return self.cache.run("export", "similarity-encoder", key, run) / "model"

    def attack(self, model_dir: Path, label: str) -> Path:
        corpus = self.datasets["attack"]
        manifest = load_manifest(model_dir)
        mlm = self.attack_mlm()
        params = AttackParams(**{**as_key(self.attack_p), "mlm": mlm})
        sim = self.similarity_encoder()
        key = {"model_sha256": manifest["sha256"], "data": corpus.as_dict(), "data_fp": corpus.fingerprint(),
               **as_key(params), "mlm_id": _file_id(mlm),
               "similarity_model": load_manifest(sim)["sha256"] if sim else None}

        def run(out: Path):
            from .attack import run_attack

            run_attack(model_dir, corpus, out, params, similarity_model=sim, device=self.device)

        return self.cache.run("attack", label, key, run)

    # ---- whole run
    def run(self) -> Path:
        t0 = time.perf_counter()
        for spec in self.models:
            a = self.paths[spec.name]
            base = self.export(spec, "base")
            encoder = self.export(spec, "encoder")
            a["manifest"] = (base or encoder)
            if base is not None:
                a["base"] = base
            if "representation" in self.datasets:
                for role, model_dir in (("before", base), ("after", encoder)):
                    if model_dir is not None:
                        store = self.embed(model_dir, "representation", f"{spec.name}-{role}-representation")
                        a[f"knn_{role}"] = self.knn(store, f"{spec.name}-{role}")
            ood_model = encoder or base
            if ood_model is not None and "ood_train" in self.datasets and "ood_test" in self.datasets:
                stores = {role: self.embed(ood_model, ds, f"{spec.name}-{'after' if encoder else 'before'}-{ds}")
                          for role, ds in (("train", "ood_train"), ("test", "ood_test"), ("val", "ood_val"),
                                           ("in_test", "ood_in_test")) if ds in self.datasets}
                a["ood"] = self.ood(stores, spec.name)
                a["ood_encoder"] = (f"fine-tuned ({'QA' if self.finetuned_role(spec) == 'qa' else 'classification'}) "
                                    "encoder" if encoder else "pre-trained encoder")
            if "latency" in self.given and (base or encoder):
                a["latency"] = self.latency(base or encoder, spec.name)
            if "qa_eval" in self.datasets:
                qa = self.export(spec, "qa")
                if qa is not None:
                    a["predict_qa"] = self.predict(qa, "qa_eval", f"{spec.name}-qa", "qa")
            sentiment = (self.export(spec, "sentiment") if ("attack" in self.datasets or "cls_eval" in self.datasets)
                         else None)
            if sentiment is not None and "cls_eval" in self.datasets:
                a["predict_cls"] = self.predict(sentiment, "cls_eval", f"{spec.name}-cls", "cls")
            if sentiment is not None and "attack" in self.datasets and "attack" in self.given:
                a["attack"] = self.attack(sentiment, spec.name)
        return self.report(time.perf_counter() - t0)

    def artifacts(self) -> dict:
        """The stored artifacts of every model, loaded for the report builders."""
        from .analysis.knn import load_knn
        from .analysis.ood import load_ood
        from .analysis.scoring import load_errors
        from .analysis.tables import ModelArtifacts
        from .files import load_json

        arts = {}
        for spec in self.models:
            p = self.paths[spec.name]
            m = ModelArtifacts(manifest=load_manifest(p["manifest"]) if p.get("manifest") else None)
            m.knn = {ph: load_knn(p[f"knn_{ph}"]) for ph in ("before", "after") if f"knn_{ph}" in p}
            if "ood" in p:
                m.ood, m.ood_encoder = load_ood(p["ood"]), p["ood_encoder"]
            if "predict_qa" in p:
                m.errors = load_errors(p["predict_qa"])
                m.qa_metrics = load_json(p["predict_qa"] / "metrics.json")
            if "predict_cls" in p:
                m.cls_errors = load_errors(p["predict_cls"])
                m.cls_metrics = load_json(p["predict_cls"] / "metrics.json")
            if "attack" in p:
                m.attack = load_json(p["attack"] / "summary.json")
            if "latency" in p:
                m.latency = load_json(p["latency"])
            arts[spec.name] = m
        return arts

    def _mlm_line(self) -> str:
        if "attack" not in self.given or "attack" not in self.datasets:
            return ""
        from .mlm import describe

        return describe(self.attack_mlm()) + "."

    def report(self, seconds: float) -> Path:
        from .analysis.tables import ReportSpec, write_report

        names = [m.name for m in self.models]
        arts = self.artifacts()
        steps = ", ".join(f"{k} {v:.0f} s" for k, v in self.cache.seconds.items())
        spec = ReportSpec(
            title=self.cfg.get("title", "lookalike: do the compressed models behave like the large one?"),
            description=self.cfg.get("description", ""), k=self.knn_p.k, knn_ks=tuple(self.knn_p.ks),
            k_ood=self.ood_p.k, ood_ks=tuple(self.ood_p.ks), tpr=self.ood_p.tpr,
            attack_setting=" ".join(x for x in (next((a.attack["setting"] for a in arts.values() if a.attack), ""),
                                                 self._mlm_line()) if x),
            provenance=(f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {seconds:.0f} s; "
                        f"steps run: {len(self.cache.ran)} ({steps or 'none'}), reused from cache: "
                        f"{len(self.cache.skipped)}. Artifacts under {self.out / 'steps'}."))
        out = self.out / "report"
        summary = write_report(names, arts, spec, out)
        summary.update(seconds=seconds, step_seconds=self.cache.seconds)
        from .analysis.report import dump_json

        dump_json(summary, out / "summary.json")
        return out


def _store_key(store: Path) -> str:
    from .engine import open_store

    return open_store(store).key()


def load_config(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError("no such experiment file", path=p)
    class _Loader(yaml.SafeLoader):
        """safe_load, but a key given twice in one mapping is an error (YAML keeps the last one silently)."""

    def _mapping(loader, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise InputError(f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                                 path=p, field=str(key))
            seen[key] = key_node.start_mark.line
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
    try:
        cfg = yaml.load(p.read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=p,
                         record=f"line {mark.line + 1}" if mark else None) from None
    return cfg


def run_experiment(path: str | Path, out: str | Path | None = None, echo=None, device: str = "auto") -> Path:
    cfg = load_config(path)
    try:
        # the command line's -o is relative to the working folder; every path in the file (out: included) is
        # relative to the file, like its datasets
        base = Path(path).resolve().parent
        if out is not None:
            out = Path(out).resolve()
        else:
            given = cfg.get("out") if isinstance(cfg, dict) else None
            out = (base / given).resolve() if given else Path(path).resolve().with_suffix("")
        return Experiment(cfg, out, base, echo=echo, device=device).run()
    except InputError as exc:
        if exc.path is None:
            raise InputError(str(exc), path=path) from None
        raise
