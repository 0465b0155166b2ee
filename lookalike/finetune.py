"""Fine-tune a base checkpoint for extractive QA (SQuAD v2 style) or sequence classification (IMDB style).

Uses the Hugging Face Trainer; checkpoints go to OUT/checkpoints and a re-run resumes from the latest.
The final model and tokenizer are saved to OUT as an ordinary Hugging Face folder, ready for `export`.
`keep_layers` drops encoder layers before training (a layer-dropped model fine-tuned on its own, as the
paper's compressed models are).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from . import tasks
from .data import CorpusSpec
from .exporters import drop_layers
from .notes import NOTICE
from .outputs import OutputError, OwnedFolder
from .params import FinetuneParams
from .core import pretrained

log = logging.getLogger(__name__)

INFO = "lookalike-finetune.json"

RECIPE = "lookalike-recipe.json"


def base_identity(model: str) -> dict:
    """What the base checkpoint is: a local folder by the sha256 of its config and weights, a hub id by name."""
    from .files import sha256_file

    path = Path(model)
    if not path.is_dir():
        return {"base": str(model)}
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.name == "config.json" or p.suffix in (
        ".safetensors", ".bin")))
    import hashlib

    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0" + sha256_file(p).encode())
    return {"base": str(model), "base_sha256": h.hexdigest()}


class _ListDataset:
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _select(corpus: CorpusSpec, params: FinetuneParams) -> tuple[list, str]:
    """The records to train on and how they were chosen: with a limit, a seeded draw from the whole corpus (so a
    file sorted by label still gives every class), unless shuffle is off."""
    if corpus.limit is None or not params.shuffle:
        records = list(corpus.records())
        return records, (f"the first {len(records)}" if corpus.limit else f"all {len(records)}")
    import random

    every = list(corpus.replace(limit=None).records())
    seed = params.seed if params.shuffle_seed is None else params.shuffle_seed
    pick = sorted(random.Random(seed).sample(range(len(every)), min(corpus.limit, len(every))))
    return [every[i] for i in pick], f"{len(pick)} of {len(every)} drawn with seed {seed}"


def hf_folder_names(net, tok) -> list[str]:
    """The files the final save will write (the tokenizer's and config's, saved once to a scratch folder, and the
    weights), so a user's file at one of those names is refused before training, not after."""
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        net.config.save_pretrained(tmp)
        names = sorted(p.name for p in Path(tmp).iterdir())
    return [*names, "model.safetensors"]


def finetune(task: str, model: str, corpus: CorpusSpec | str | Path, out: str | Path,
             params: FinetuneParams | None = None, *, weight_decay: float = 0.01, warmup_ratio: float = 0.1,
             progress: bool = True, overwrite: bool = False, eval_data: CorpusSpec | str | Path | None = None,
             keep_checkpoints: bool = False) -> Path:
    """Fine-tune `model` on `corpus` for `task` ("qa" or "cls"); returns the saved model folder.

    The folder is keyed on the whole recipe (base checkpoint's hash, data identity, task, every hyperparameter),
    written before training: a re-run of the same recipe resumes (or, finished, does nothing); another recipe is
    refused unless `overwrite`, which removes only what finetune wrote. The record is written once, for the weights
    this run trained. eval_data: held-out records scored at the end (classification accuracy). Checkpoints are
    removed once the final weights are saved, unless keep_checkpoints."""
    import torch
    import transformers

    spec = tasks.get(task)
    params = params or FinetuneParams()
    d = spec.finetune_defaults
    lr = params.learning_rate or d["learning_rate"]
    epochs = params.epochs or d["epochs"]
    batch_size = params.batch_size or d["batch_size"]
    max_length = params.max_length or d["max_length"]
    seed = params.seed
    out = Path(out)
    corpus = spec.prepare(CorpusSpec.coerce(corpus))
    records, selection = _select(corpus, params)
    recipe = {"task": spec.name, **base_identity(model), "data_fingerprint": corpus.fingerprint(),
              "data": {k: v for k, v in corpus.as_dict().items() if k != "path"}, "selection": selection,
              "learning_rate": lr, "epochs": epochs, "max_steps": params.max_steps, "batch_size": batch_size,
              "max_length": max_length, "doc_stride": params.doc_stride or d.get("doc_stride"), "seed": seed,
              "answerable_only": params.answerable_only, "shuffle": params.shuffle,
              "shuffle_seed": params.shuffle_seed, "weight_decay": weight_decay, "warmup_ratio": warmup_ratio,
              "keep_layers": list(params.keep_layers) if params.keep_layers is not None else None}
    folder = OwnedFolder(out)
    done = _guard_recipe(folder, recipe, overwrite)
    if done is not None:
        return done
    transformers.set_seed(seed)
    tok = pretrained.tokenizer(model)
    records, rows, model_kwargs, state = spec.training_rows(tok, records, max_length, params, corpus, selection)
    net = pretrained.load(getattr(transformers, spec.export.auto_class), model, **model_kwargs)
    collator = transformers.DataCollatorWithPadding(tok)  # pad each batch to its longest feature
    if params.keep_layers is not None:
        drop_layers(net, params.keep_layers)
    max_steps = params.max_steps
    save_steps = params.save_steps
    folder.claim(INFO, *hf_folder_names(net, tok))  # refused before training when a name holds a user's file
    if folder.status("checkpoints") == "foreign":
        raise OutputError(f"{out / 'checkpoints'}: exists and was not made by lookalike; refusing to train into it "
                          "(the trainer rotates what is there): move it away or choose another folder")
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    folder.record_dir("checkpoints")
    args = transformers.TrainingArguments(
        output_dir=str(ckpt), learning_rate=lr, num_train_epochs=epochs, max_steps=max_steps,
        per_device_train_batch_size=batch_size, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
        save_strategy="steps", save_steps=save_steps, save_total_limit=2, logging_steps=max(1, min(50, save_steps)),
        report_to=[], seed=seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=not progress,
        dataloader_num_workers=0)
    trainer = transformers.Trainer(model=net, args=args, train_dataset=_ListDataset(rows), data_collator=collator)
    if not progress:  # without bars the Trainer prints every log dict instead: keep quiet runs quiet
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    resume = ckpt.exists() and any(p.name.startswith("checkpoint-") for p in ckpt.iterdir())
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    with tempfile.TemporaryDirectory(prefix=".final-", dir=out) as tmp:  # written beside, then moved in by name
        net.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        folder.move_in(tmp)
    info = {"task": spec.name, "base": str(model), "data": corpus.as_dict(), "data_fingerprint": corpus.fingerprint(),
            "n_records": len(records), "n_features": len(rows), "learning_rate": lr, "epochs": epochs,
            "max_steps": max_steps, "batch_size": batch_size, "max_length": max_length, "seed": seed,
            "answerable_only": params.answerable_only, "selection": selection,
            "keep_layers": list(params.keep_layers) if params.keep_layers is not None else None,
            "train_loss": float(result.training_loss), "train_seconds": float(result.metrics.get("train_runtime", 0)),
            "resumed": resume, "recipe": recipe}
    info.update(spec.after_training(net, tok, records, state, float(result.training_loss), max_length, eval_data,
                                    corpus))
    folder.write_json(INFO, info)
    if not keep_checkpoints and (out / "checkpoints").is_dir() and folder.status("checkpoints") == "ours":
        import shutil

        shutil.rmtree(out / "checkpoints")  # lookalike's own work folder: the final weights are saved
        folder.forget(["checkpoints"])
    return out


def _guard_recipe(folder: OwnedFolder, recipe: dict, overwrite: bool) -> Path | None:
    """Refuse a folder made with another recipe (unless overwrite: lookalike's files removed first); the folder
    when the same recipe already finished (nothing to do); None to train (fresh, or resuming the same recipe)."""
    from .files import first_difference, load_json

    out = folder.folder
    state = folder.status(RECIPE)
    if state == "foreign":
        raise OutputError(f"{out / RECIPE}: exists and was not written by lookalike (or was changed since); refusing "
                          "to train into this folder: move it away or choose another")
    old = load_json(out / RECIPE, "fine-tune recipe") if state == "ours" else None
    if old is None and (folder.status(INFO) == "ours" or folder.status("checkpoints") == "ours"):
        old = {}  # a folder from before recipes were recorded: its recipe is unknown
    if old is not None and old != recipe:
        if not overwrite:
            k = first_difference(old, recipe) if old else "recipe"
            said = f"{k}: {old.get(k)!r} there, {recipe.get(k)!r} now" if old else "made before lookalike recorded " \
                "recipes"
            raise OutputError(f"{out}: holds a fine-tune of another recipe ({said}); its weights are not this "
                              "recipe's: choose another folder, or --overwrite to remove what finetune wrote there")
        removed = folder.clear()
        log.log(NOTICE, "%s: removed %d files of the earlier fine-tune (--overwrite)", out, removed)
    elif old == recipe and folder.status(INFO) == "ours":
        info = load_json(out / INFO, "fine-tune record")
        if info.get("recipe") == recipe:
            log.log(NOTICE, "%s: already fine-tuned with this recipe; nothing to do (--overwrite trains again)", out)
            return out
    folder.folder.mkdir(parents=True, exist_ok=True)
    if folder.status(RECIPE) != "ours":
        folder.write_json(RECIPE, recipe)
    return None
