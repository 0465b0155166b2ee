"""An experiment file, read and checked before anything runs.

Unknown keys (at the top, in a model, a dataset or a step) are errors naming the nearest valid key, values are
typed (`lookalike.params`), and where/how to run (backend, Ray address, device) is not a config key: it comes
from the command line only. Every relative path in the file resolves against the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data import CorpusSpec
from ..data.opener import read_document
from ..data.spec import SPEC_KEYS
from ..errors import InputError, unknown_key_message
from ..exporters.variant import Variant
from ..models import resolve_model
from ..params import STEPS, FinetuneParams, parse_params

TOP_KEYS = ("title", "description", "out", "models", "datasets", "steps")
MODEL_KEYS = ("name", "like", "base", "qa", "sentiment", "variant")
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
    variant: Variant = field(default_factory=Variant)

    def finetuned_role(self) -> str | None:
        """Whose encoder is "after fine-tuning": the QA model's (the paper), else the classifier's."""
        return "qa" if self.qa is not None else "sentiment" if self.sentiment is not None else None


def _refuse_unknown(d: dict, valid, where: str) -> None:
    for k in d:
        if k not in valid:
            raise InputError(unknown_key_message(k, valid), record=where, field=str(k))


class _Paths:
    """Relative paths ("./", "../") resolve against the experiment file's folder; hub ids stay as they are."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir

    def path(self, v):
        if isinstance(v, str) and (v.startswith("./") or v.startswith("../")):
            return str((self.base_dir / v).resolve())
        return v

    def model(self, v):
        return resolve_model(self.path(v))


def _parse_finetune(v: dict, where: str, base: str | None, paths: _Paths) -> Finetune:
    valid = {"model", "data", *SPEC_KEYS[1:], *FinetuneParams.__dataclass_fields__}
    if not isinstance(v, dict):
        raise InputError("expected a mapping", record=where)
    _refuse_unknown(v, valid, where)
    if "data" not in v:
        raise InputError("fine-tuning needs 'data'", record=where, field="data")
    spec = {k: v[k] for k in SPEC_KEYS[1:] if k in v}
    data = v["data"]
    data = {**data, **spec} if isinstance(data, dict) else {"path": data, **spec}
    data["path"] = paths.path(data.get("path"))
    params = {k: x for k, x in v.items() if k in FinetuneParams.__dataclass_fields__}
    model = v.get("model", base)
    if model is None:
        raise InputError("fine-tuning needs a 'model' (or the model's 'base')", record=where, field="model")
    return Finetune(paths.model(model), CorpusSpec.from_dict(data, where),
                    parse_params(FinetuneParams, params, where), explicit_model="model" in v)


def _parse_model(m, where: str, specs: dict[str, ModelSpec], paths: _Paths) -> ModelSpec:
    if not isinstance(m, dict) or "name" not in m:
        raise InputError("each model needs a 'name'", record=where, field="name")
    _refuse_unknown(m, MODEL_KEYS, where)
    for key in ("name", "like", "base"):  # typed like every other key: a path or hub id, a model's name
        if key in m and (not isinstance(m[key], str) or not m[key].strip()):
            what = "a path or hub id" if key == "base" else "a model name"
            raise InputError(f"expected {what} (a non-empty string), got {type(m[key]).__name__} {m[key]!r}"[:200],
                             record=where, field=key)
    for role in ("qa", "sentiment"):
        if role in m and not isinstance(m[role], (str, dict)):
            raise InputError(f"expected a checkpoint (path or hub id) or {{finetune: {{...}}}}, got "
                             f"{type(m[role]).__name__} {m[role]!r}"[:200], record=where, field=role)
    parent = specs.get(m["like"]) if "like" in m else None
    if "like" in m and parent is None:
        raise InputError(f"'like: {m['like']}' names no earlier model", record=where, field="like")
    if not isinstance(m.get("variant") or {}, dict):
        raise InputError("expected a mapping", record=where, field="variant")
    # `like:` inherits the parent's variant as it was given; this model's keys override it
    variant = Variant.coerce({**(parent.variant.as_key() if parent else {}), **(m.get("variant") or {})},
                             f"{where}.variant")
    base = m.get("base", parent.base if parent else None)
    spec = ModelSpec(m["name"], paths.model(base) if isinstance(base, str) else base, variant=variant)
    for role in ("qa", "sentiment"):
        v = m.get(role, getattr(parent, role) if parent else None)
        if isinstance(v, str):
            v = paths.model(v)
        elif isinstance(v, dict):
            if set(v) != {"finetune"}:
                raise InputError("expected a checkpoint (path or hub id) or {finetune: {...}}",
                                 record=f"{where}.{role}")
            v = _parse_finetune(v["finetune"], f"{where}.{role}.finetune", spec.base, paths)
        elif isinstance(v, Finetune) and not v.explicit_model:
            v = Finetune(spec.base, v.corpus, v.params)  # an inherited recipe trains this model's own base
        setattr(spec, role, v)
    if spec.name in specs:
        raise InputError(f"duplicate model name {spec.name!r}", record=where, field="name")
    return spec


def _parse_datasets(raw, paths: _Paths) -> dict[str, CorpusSpec]:
    if not isinstance(raw, dict):
        raise InputError("expected a mapping of dataset roles", record="experiment", field="datasets")
    datasets = {}
    for name, d in raw.items():
        where = f"datasets.{name}"
        if name not in DATASET_ROLES:
            raise InputError(unknown_key_message(name, DATASET_ROLES), record="datasets", field=name)
        d = {"path": d} if isinstance(d, str) else dict(d) if isinstance(d, dict) else d
        if isinstance(d, dict) and "path" in d:
            d["path"] = paths.path(d["path"])
        datasets[name] = CorpusSpec.from_dict(d, where)
    return datasets


@dataclass(frozen=True)
class ParsedConfig:
    """An experiment file, checked and typed: its models (with `like:` resolved), datasets by role, every step's
    parameters (defaults where the file says nothing) and which steps the file names (latency and attack run
    only when named)."""

    models: list[ModelSpec]
    datasets: dict[str, CorpusSpec]
    steps: dict[str, object]
    given: frozenset[str]


def parse_config(cfg, base_dir: Path) -> ParsedConfig:
    """The experiment file `cfg` checked and typed; paths relative to `base_dir`."""
    if not isinstance(cfg, dict):
        raise InputError(f"an experiment file is a mapping with a 'models' list, got {type(cfg).__name__}")
    _refuse_unknown(cfg, TOP_KEYS, "experiment")
    for key in ("title", "description", "out"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            raise InputError(f"expected a string, got {type(cfg[key]).__name__}", record="experiment", field=key)
    if not isinstance(cfg.get("models"), list) or not cfg["models"]:
        raise InputError("expected a non-empty list of models", record="experiment", field="models")
    paths = _Paths(base_dir)
    specs: dict[str, ModelSpec] = {}
    for i, m in enumerate(cfg["models"]):
        spec = _parse_model(m, f"models[{i}]", specs, paths)
        specs[spec.name] = spec
    datasets = _parse_datasets(cfg.get("datasets") or {}, paths)
    steps_raw = cfg.get("steps") or {}
    if not isinstance(steps_raw, dict):
        raise InputError("expected a mapping of steps", record="experiment", field="steps")
    _refuse_unknown(steps_raw, STEPS, "steps")
    steps = {name: parse_params(cls, steps_raw.get(name), f"steps.{name}") for name, cls in STEPS.items()}
    return ParsedConfig(list(specs.values()), datasets, steps, frozenset(steps_raw))


def load_config(path: str | Path) -> dict:
    """The YAML mapping of an experiment file; a key given twice in one mapping is an error."""
    import yaml

    p = Path(path)
    if not os.path.lexists(p):
        raise InputError("no such experiment file", path=p)
    if p.is_dir():
        raise InputError("is a folder, expected an experiment file (YAML)", path=p)

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
        text = read_document(p, limit=MAX_CONFIG_BYTES, what="experiment file", corpus=False).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"undecodable bytes (not UTF-8) at byte {exc.start}", path=p) from exc
    try:
        cfg = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=p,
                         record=f"line {mark.line + 1}" if mark else None) from exc
    except RecursionError as exc:
        raise InputError("YAML nested too deeply", path=p) from exc
    _bounded(cfg, p)
    return cfg


MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000  # values in the file once every alias is expanded


def _bounded(cfg, p: Path) -> None:
    """InputError when the document, with its aliases expanded, holds more than MAX_CONFIG_NODES values (an alias
    bomb: a few hundred bytes whose expansion fills memory). The walk stops at the bound."""
    count, stack = 0, [cfg]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise InputError(f"expands to more than {MAX_CONFIG_NODES:,} values (YAML aliases repeating a "
                             "structure?); refusing it", path=p)
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
