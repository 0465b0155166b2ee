"""One command from a config to a report: export -> embed -> knn/ood -> predict -> attack -> analysis."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import tasks
from ..analysis.report import dump_json
from ..analysis.tables import ModelArtifacts, ReportSpec, write_report
from ..errors import InputError
from ..mlm import describe as describe_mlm
from ..outputs import OwnedFolder
from . import steps
from .cache import StepCache
from .config import ModelSpec, load_config, parse_config

ATTACKED = tasks.get("cls")  # BERT-Attack's target is a classifier
OOD_ROLES = (("train", "ood_train"), ("test", "ood_test"), ("val", "ood_val"), ("in_test", "ood_in_test"))


@dataclass
class ModelRun:
    """The artifact paths one model's steps produced (any may be missing)."""

    manifest: Path | None = None  # the export whose manifest describes the model (Table 1)
    knn: dict[str, Path] = field(default_factory=dict)  # {"before": ..., "after": ...}
    stores: dict[str, Path] = field(default_factory=dict)  # the representation stores, by phase (CKA reads them)
    ood: Path | None = None
    ood_encoder: str = ""
    latency: Path | None = None
    latency_model: Path | None = None  # the export the latency table times (all models at once, interleaved)
    predictions: dict[str, Path] = field(default_factory=dict)  # by task: the predict folder (errors, metrics)
    attack: Path | None = None

    def artifacts(self) -> ModelArtifacts:
        return ModelArtifacts.load(manifest=self.manifest, knn=self.knn, ood=self.ood, ood_encoder=self.ood_encoder,
                                   errors=self.predictions, attack=self.attack, latency=self.latency,
                                   stores=self.stores)


class Experiment:
    """A parsed experiment file and its step cache under `out`; `run()` makes every artifact and the report."""

    def __init__(self, cfg: dict, out: Path, base_dir: Path = Path("."), echo: Callable[[str], None] | None = None,
                 device: str = "auto"):
        self.cfg = cfg
        self.out = Path(out)
        parsed = parse_config(cfg, base_dir)
        self.models, self.given = parsed.models, parsed.given
        self.ctx = steps.Context(StepCache(self.out, echo), parsed.datasets, device=device, reference=self.models[0],
                                 **parsed.steps)
        self.runs: dict[str, ModelRun] = {}

    @property
    def datasets(self):
        return self.ctx.datasets

    def run(self) -> Path:
        t0 = time.perf_counter()
        # the report folder is rewritten whole at the end: a user's file in it is refused now, not after the run
        OwnedFolder(self.out / "report").refuse_foreign("write the report there")
        for spec in self.models:
            self.runs[spec.name] = self.run_model(spec)
        timed = {name: r.latency_model for name, r in self.runs.items() if r.latency_model is not None}
        if timed:  # one step for every model, timed run by run in turn, so a shared machine hits all alike
            for name, path in steps.latency(self.ctx, timed).items():
                self.runs[name].latency = path
        return self.report(time.perf_counter() - t0)

    def run_model(self, spec: ModelSpec) -> ModelRun:
        """Every step the datasets and steps given ask for, for one model."""
        ctx, ds, r = self.ctx, self.datasets, ModelRun()
        base = steps.export_model(ctx, spec, "base")
        encoder = steps.export_model(ctx, spec, "encoder")
        r.manifest = base or encoder
        if "representation" in ds:
            for phase, model_dir in (("before", base), ("after", encoder)):
                if model_dir is not None:
                    store = steps.embed(ctx, model_dir, "representation", f"{spec.name}-{phase}-representation")
                    r.knn[phase] = steps.knn(ctx, store, f"{spec.name}-{phase}")
                    r.stores[phase] = store
        ood_model = encoder or base
        if ood_model is not None and "ood_train" in ds and "ood_test" in ds:
            phase = "after" if encoder else "before"
            stores = {role: steps.embed(ctx, ood_model, name, f"{spec.name}-{phase}-{name}")
                      for role, name in OOD_ROLES if name in ds}
            r.ood = steps.ood(ctx, stores, spec.name)
            r.ood_encoder = (f"fine-tuned ({tasks.for_role(spec.finetuned_role()).label}) encoder" if encoder
                             else "pre-trained encoder")
        if "latency" in self.given and (base or encoder):
            r.latency_model = base or encoder
        target = None  # the classifier BERT-Attack attacks
        for task in tasks.SPECS.values():
            attacked = task is ATTACKED and "attack" in ds
            export = steps.export_model(ctx, spec, task.role) if task.eval_dataset in ds or attacked else None
            if export is not None and task.eval_dataset in ds:
                r.predictions[task.name] = steps.predict(ctx, export, task.eval_dataset, f"{spec.name}-{task.name}",
                                                         task.name)
            if attacked:
                target = export
        if target is not None and "attack" in self.given:
            r.attack = steps.attack(ctx, target, spec.name)
        return r

    def _mlm_line(self) -> str:
        if "attack" not in self.given or "attack" not in self.datasets:
            return ""
        return describe_mlm(steps.attack_mlm(self.ctx)) + "."

    def report(self, seconds: float) -> Path:
        names = [m.name for m in self.models]
        arts = {name: self.runs[name].artifacts() for name in names}
        cache, p = self.ctx.cache, self.ctx
        step_seconds = ", ".join(f"{k} {v:.0f} s" for k, v in cache.seconds.items())
        spec = ReportSpec(
            title=self.cfg.get("title", "lookalike: do the compressed models behave like the large one?"),
            description=self.cfg.get("description", ""), k=p.knn.k, knn_ks=tuple(p.knn.ks),
            k_ood=p.ood.k, ood_ks=tuple(p.ood.ks), tpr=p.ood.tpr, measures=tuple(p.agree.measures),
            pooling=p.embed.pooling,
            attack_setting=" ".join(x for x in (next((a.attack["setting"] for a in arts.values() if a.attack), ""),
                                                 self._mlm_line()) if x),
            provenance=(f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {seconds:.0f} s; "
                        f"steps run: {len(cache.ran)} ({step_seconds or 'none'}), reused from cache: "
                        f"{len(cache.skipped)}. Artifacts under {self.out / 'steps'}."))
        out = self.out / "report"
        summary = write_report(names, arts, spec, out)
        summary.update(seconds=seconds, step_seconds=cache.seconds)
        dump_json(summary, out / "summary.json")
        return out


def _count(spec, where: str) -> int:
    """The records of a dataset, read whole through its reader (InputError naming the file and the entry)."""
    try:
        return spec.count()
    except InputError as exc:
        if exc.path is None:
            raise InputError(str(exc), path=spec.path, record=where) from exc
        raise


def _model_source(name: str) -> str:
    """Where a model comes from, checked without loading it: a local folder must exist; a hub id is fetched when
    the run needs it (offline: it must be in the Hugging Face cache)."""
    if name.startswith(("/", "./", "../")) or Path(name).exists():
        if not Path(name).is_dir():
            raise InputError("no such model folder", path=name)
        from ..models import minilm_path

        return "the packaged MiniLM" if Path(name) == minilm_path() else f"folder {name}"
    return f"hub id {name} (downloaded when the run needs it)"


def check_experiment(path: str | Path, out: str | Path | None = None) -> list[str]:
    """`lookalike run --check`: the experiment file parsed and typed, every model's source and every dataset read
    whole through its reader (records counted, fields checked), the output folder's report free of foreign files,
    and the steps the run would make; nothing is exported, embedded or written. InputError names the first
    problem (file, record, field); returns the lines a person reads."""
    cfg = load_config(path)
    base = Path(path).resolve().parent
    try:
        parsed = parse_config(cfg, base)
        lines = [f"experiment {path}: {len(parsed.models)} models, {len(parsed.datasets)} datasets"]
        counted: dict[str, int] = {}
        for spec in parsed.models:
            parts = []
            for role, v in (("base", spec.base), ("qa", spec.qa), ("sentiment", spec.sentiment)):
                if isinstance(v, str):
                    parts.append(f"{role}: {_model_source(v)}")
                elif v is not None:  # a fine-tune: its model and its training data, read whole
                    key = str(v.corpus.identity())
                    if key not in counted:
                        counted[key] = _count(v.corpus, f"models.{spec.name}.{role}.finetune.data")
                    parts.append(f"{role}: fine-tune {_model_source(v.model)} on {counted[key]:,} records of "
                                 f"{v.corpus.path}")
            lines.append(f"  model {spec.name}: {'; '.join(parts)}; variant {spec.variant.describe()}")
        for role, spec in parsed.datasets.items():
            lines.append(f"  dataset {role}: {_count(spec, f'datasets.{role}'):,} records from {spec.path}")
    except InputError as exc:
        if exc.path is None:
            raise InputError(str(exc), path=path) from exc
        raise
    given = cfg.get("out") if isinstance(cfg, dict) else None
    folder = Path(out).resolve() if out is not None else ((base / given).resolve() if given
                                                          else Path(path).resolve().with_suffix(""))
    OwnedFolder(folder / "report").refuse_foreign("write the report there")
    ds = parsed.datasets
    planned = ["export"] + (["embed + knn (representation)"] if "representation" in ds else []) \
        + (["embed + ood"] if {"ood_train", "ood_test"} <= set(ds) else []) \
        + [f"predict ({t.name})" for t in tasks.SPECS.values() if t.eval_dataset in ds] \
        + (["attack"] if "attack" in parsed.given and "attack" in ds else []) \
        + (["latency"] if "latency" in parsed.given else [])
    lines.append(f"  steps: {', '.join(planned)}; output {folder}")
    lines.append("ok: the file, its models and its datasets check out; nothing was run")
    return lines


def run_experiment(path: str | Path, out: str | Path | None = None, echo=None, device: str = "auto") -> Path:
    """Run the experiment file at `path`; the report folder. The command line's `out` is relative to the working
    folder; every path in the file (`out:` included) is relative to the file, like its datasets."""
    cfg = load_config(path)
    try:
        base = Path(path).resolve().parent
        if out is not None:
            out = Path(out).resolve()
        else:
            given = cfg.get("out") if isinstance(cfg, dict) else None
            out = (base / given).resolve() if given else Path(path).resolve().with_suffix("")
        return Experiment(cfg, out, base, echo=echo, device=device).run()
    except InputError as exc:
        if exc.path is None:
            raise InputError(str(exc), path=path) from exc
        raise
