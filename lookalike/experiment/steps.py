"""The experiment's steps: one function per step over a small context, each returning the path of its artifact.

Each step is cached (`cache.StepCache`): its key holds the inputs' content identities and its parameters, so
a re-run redoes only what changed. A layer-dropped variant is fine-tuned after the drop (a compressed model
trained on the task, as the paper's are); quantisation applies to the fine-tuned weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import jobs, tasks
from ..attack import run_attack
from ..core.manifest import load_manifest
from ..core.heads import FEATURE_EXTRACTION
from ..data import CorpusSpec
from ..engine import OnnxModel
from ..engine import embed as embed_corpus
from ..engine.bench import interleaved_latency
from ..engine.tokens import export_tokenizer, tokenize_corpus, tokenizer_fingerprint
from ..errors import InputError
from ..exporters import export
from ..exporters.variant import Variant
from ..finetune import finetune
from ..mlm import fit_mlm_head
from ..models import resolve_model
from ..outputs import OwnedFolder
from ..params import (
    AgreeParams,
    AttackParams,
    EmbedParams,
    FinetuneParams,
    KnnParams,
    LatencyParams,
    OodParams,
    PredictParams,
    as_key,
)
from .cache import StepCache, file_id, store_key
from .config import Finetune, ModelSpec


@dataclass
class Context:
    """What every step reads: the cache, the datasets by role, the typed step parameters, the device."""

    cache: StepCache
    datasets: dict[str, CorpusSpec]
    embed: EmbedParams
    knn: KnnParams
    ood: OodParams
    predict: PredictParams
    attack: AttackParams
    latency: LatencyParams
    agree: AgreeParams = field(default_factory=AgreeParams)  # the report's representation measures
    device: str = "auto"
    reference: ModelSpec | None = None  # the first model: its base fits the attack's MLM and similarity encoder

    def run(self, step: str, label: str, key: dict, fn: Callable[[Path], None]) -> Path:
        return self.cache.run(step, label, key, fn)


def checkpoint(ctx: Context, spec: ModelSpec, role: str) -> str | None:
    """Path or hub id of the model's checkpoint for a role, fine-tuning it first if asked."""
    v = spec.base if role == "base" else getattr(spec, role)
    if not isinstance(v, Finetune):
        return v
    task = tasks.for_role(role).name
    keep = spec.variant.keep_layers
    params = FinetuneParams(**{**as_key(v.params), "keep_layers": keep or None})
    key = {"model": v.model, "model_id": file_id(v.model), "data": v.corpus.as_dict(),
           "data_fp": v.corpus.fingerprint(), "task": task, **as_key(params)}

    def run(out: Path):
        finetune(task, v.model, v.corpus, out / "model", params, progress=False)

    return str(ctx.run("finetune", f"{spec.name}-{role}", key, run) / "model")


def export_task(role: str):
    """The export task a model's role needs ("base", "encoder": the fine-tuned checkpoint's encoder, for
    features; a task's role: that task's export)."""
    return FEATURE_EXTRACTION if role in ("base", "encoder") else tasks.for_role(role).export


def export_model(ctx: Context, spec: ModelSpec, role: str) -> Path | None:
    """The model's export for a role ("base", "encoder": the fine-tuned checkpoint's encoder for the paper's
    "after fine-tuning" columns, "qa", "sentiment"); None when the model has no checkpoint for it."""
    task = export_task(role).name
    trained_role = spec.finetuned_role() if role == "encoder" else role
    if trained_role is None:
        return None
    src = checkpoint(ctx, spec, trained_role)
    if src is None:
        return None
    v = spec.variant
    if trained_role != "base" and isinstance(getattr(spec, trained_role), Finetune):
        v = v.replace(keep_layers=None)  # dropped before fine-tuning
    # "fusion": what an unset `optimize` means; exports cached before fusion became the default differ
    key = {"source": src, "source_id": file_id(src), "task": task, "variant": v.as_key(), "fusion": "auto"}

    def run(out: Path):
        export(src, out / "model", task, v, overwrite=True)

    return ctx.run("export", f"{spec.name}-{role}", key, run) / "model"


def tokens(ctx: Context, model_dir: Path, dataset: str) -> Path:
    """A dataset tokenized once per tokenizer: every export that shares the tokenizer embeds from it."""
    corpus = ctx.datasets[dataset]
    tok, max_length = export_tokenizer(model_dir, ctx.embed.max_length)
    key = {"tokenizer": tokenizer_fingerprint(tok), "max_length": max_length, "data": corpus.as_dict(),
           "data_fp": corpus.fingerprint()}

    def run(out: Path):
        tokenize_corpus(tok, corpus, out / "tokens", max_length=max_length, progress=False)

    return ctx.run("tokenize", dataset, key, run) / "tokens"


def embed(ctx: Context, model_dir: Path, dataset: str, label: str) -> Path:
    corpus = ctx.datasets[dataset]
    key = {"model_sha256": load_manifest(model_dir).sha256, "data": corpus.as_dict(),
           "data_fp": corpus.fingerprint(), **as_key(ctx.embed)}

    def run(out: Path):
        embed_corpus(model_dir, corpus, out / "store", ctx.embed, device=ctx.device, progress=False,
                     tokens=tokens(ctx, model_dir, dataset))

    return ctx.run("embed", label, key, run) / "store"


def knn(ctx: Context, store: Path, label: str) -> Path:
    p = ctx.knn
    key = {"store": store_key(store), "k": p.k_max, "index": p.index}
    if p.sample is not None:  # keyed only when given: exhaustive steps keep their cache keys
        key.update(sample=p.sample, sample_seed=p.sample_seed)

    def run(out: Path):
        jobs.knn(store, out / "knn.h5", p.k_max, index=p.index, block_rows=p.block_rows, sample=p.sample,
                 sample_seed=p.sample_seed)

    return ctx.run("knn", label, key, run) / "knn.h5"


def ood(ctx: Context, stores: dict[str, Path], label: str) -> Path:
    """Deep-kNN OOD: stores by role ("train" bank, "test" challenge set, optional "val", "in_test")."""
    p = ctx.ood
    key = {"stores": {k: store_key(v) for k, v in stores.items()}, "ks": p.ks, "tpr": p.tpr,
           "val_fraction": p.val_fraction, "seed": p.seed}

    def run(out: Path):
        jobs.ood(stores["train"], stores["test"], out / "ood.json", p.ks, val=stores.get("val"),
                 in_test=stores.get("in_test"), tpr=p.tpr, val_fraction=p.val_fraction, seed=p.seed)

    return ctx.run("ood", label, key, run) / "ood.json"


def latency(ctx: Context, model_dirs: dict[str, Path]) -> dict[str, Path]:
    """Latency of every model in one step, their timed runs interleaved (engine.bench.interleaved_latency), each
    row with its spread; {model name: its latency.json}."""
    p = ctx.latency
    names = list(model_dirs)
    key = {"models": {n: load_manifest(d).sha256 for n, d in model_dirs.items()}, **as_key(p),
           "device": ctx.device, "timing": "interleaved"}

    def run(out: Path):
        models = [OnnxModel(model_dirs[n], device=ctx.device) for n in names]
        per_model = interleaved_latency(models, [m.output_names[0] for m in models], p.batch_sizes, p.seq_lengths,
                                        repeat=p.repeat)
        folder = OwnedFolder(out)
        for i, (m, rows) in enumerate(zip(models, per_model)):
            folder.write_json(f"latency-{i}.json", {"device": m.device, "rows": rows, "model": names[i],
                                                    "timing": "interleaved with the other models, run by run"})

    folder = ctx.run("latency", "all-models", key, run)
    return {n: folder / f"latency-{i}.json" for i, n in enumerate(names)}


def predict(ctx: Context, model_dir: Path, dataset: str, label: str, task: str) -> Path:
    corpus = ctx.datasets[dataset]
    key = {"model_sha256": load_manifest(model_dir).sha256, "data": corpus.as_dict(),
           "data_fp": corpus.fingerprint(), "task": task, **as_key(ctx.predict)}

    def run(out: Path):
        jobs.predict_and_score(model_dir, corpus, out, task=task, params=ctx.predict, device=ctx.device)

    return ctx.run("predict", label, key, run)


def attack_mlm(ctx: Context) -> str:
    """The attack's masked-LM: as given, or (mlm: fit) the reference model's base encoder with a head fitted on
    the `mlm_fit` dataset and measured on the attack texts (held out from the fit)."""
    if ctx.attack.mlm != "fit":
        return resolve_model(ctx.attack.mlm)
    if "mlm_fit" not in ctx.datasets:
        raise InputError("steps.attack.mlm: fit needs a datasets.mlm_fit entry (text to fit the head on)",
                         field="mlm")
    base = ctx.reference.base
    fit, held = ctx.datasets["mlm_fit"], ctx.datasets["attack"]
    key = {"base": base, "base_id": file_id(base), "fit": fit.as_dict(), "fit_fp": fit.fingerprint(),
           "eval": held.as_dict(), "eval_fp": held.fingerprint(), "max_length": ctx.attack.max_length}

    def run(out: Path):
        fit_mlm_head(base, fit, out / "mlm", eval_corpus=held, max_length=min(ctx.attack.max_length, 256))

    return str(ctx.run("fit_mlm", "attack-mlm", key, run) / "mlm")


def similarity_encoder(ctx: Context) -> Path | None:
    """USE's offline stand-in for the attack's similarity constraint: the reference model's pre-trained
    encoder, int8 (the same attack outcomes as fp32 in less time; at threshold 0.2 the constraint rarely binds)."""
    ref = ctx.reference
    if ref.base is None or ctx.attack.similarity != "engine":
        return None
    src = ref.base
    variant = Variant(quantize="int8", per_channel=True)
    key = {"source": src, "source_id": file_id(src), "task": FEATURE_EXTRACTION.name, "variant": variant.as_key(),
           "fusion": "auto"}

    def run(out: Path):
        export(src, out / "model", FEATURE_EXTRACTION.name, variant)

    return ctx.run("export", "similarity-encoder", key, run) / "model"


def attack(ctx: Context, model_dir: Path, label: str) -> Path:
    corpus = ctx.datasets["attack"]
    mlm = attack_mlm(ctx)
    params = AttackParams(**{**as_key(ctx.attack), "mlm": mlm})
    sim = similarity_encoder(ctx)
    key = {"model_sha256": load_manifest(model_dir).sha256, "data": corpus.as_dict(),
           "data_fp": corpus.fingerprint(), **as_key(params), "mlm_id": file_id(mlm),
           "similarity_model": load_manifest(sim).sha256 if sim else None}

    def run(out: Path):
        run_attack(model_dir, corpus, out, params, similarity_model=sim, device=ctx.device)

    return ctx.run("attack", label, key, run)
