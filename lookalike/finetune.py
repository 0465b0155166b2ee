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

from .data import CorpusSpec
from .errors import InputError
from .exporters import drop_layers
from .notes import NOTICE
from .outputs import OutputError, OwnedFolder
from .params import FinetuneParams

log = logging.getLogger(__name__)

INFO = "lookalike-finetune.json"

DEFAULTS = {
    "qa": {"learning_rate": 3e-5, "epochs": 2.0, "max_length": 384, "doc_stride": 128, "batch_size": 12},
    "cls": {"learning_rate": 2e-5, "epochs": 2.0, "max_length": 256, "batch_size": 16},
}


class _ListDataset:
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def qa_features(tokenizer, records, max_length: int, doc_stride: int) -> list[dict]:
    """Training features with start/end token positions (CLS for unanswerable or out-of-window answers)."""
    enc = tokenizer([r.text.lstrip() for r in records], [r.text_pair for r in records], truncation="only_second",
                    max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding=False)
    feats = []
    for f, ex in enumerate(enc["overflow_to_sample_mapping"]):
        r = records[ex]
        ids = enc["input_ids"][f]
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        seq = enc.sequence_ids(f)
        offsets = enc["offset_mapping"][f]
        start_pos = end_pos = cls
        if r.answers and r.answer_starts and r.answer_starts[0] >= 0:
            s_char = r.answer_starts[0]
            e_char = s_char + len(r.answers[0])
            ts = seq.index(1)
            te = len(seq) - 1 - seq[::-1].index(1)
            if offsets[ts][0] <= s_char and offsets[te][1] >= e_char:
                while ts < len(offsets) and seq[ts] == 1 and offsets[ts][0] <= s_char:
                    ts += 1
                while seq[te] == 1 and offsets[te][1] >= e_char:
                    te -= 1
                start_pos, end_pos = ts - 1, te + 1
        row = {k: enc[k][f] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        row.update(start_positions=start_pos, end_positions=end_pos)
        feats.append(row)
    return feats


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


def _say_label_counts(labels: list, corpus: CorpusSpec, selection: str) -> None:
    from collections import Counter

    counts = Counter(labels)
    log.log(NOTICE, "training on %s records of %s; labels: %s", selection, corpus.path,
            ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))))
    if len(counts) < 2:
        log.warning("only one label (%s) in the training records: the classifier cannot learn to tell classes "
                    "apart%s", next(iter(counts)), " (is the file sorted by label? drop --no-shuffle)"
                    if corpus.limit else "")
        return
    rare = [k for k, v in counts.items() if v < 0.1 * len(labels)]
    if rare:
        log.warning("labels %s are under 10%% of the training records", sorted(map(str, rare)))


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
             progress: bool = True) -> Path:
    """Fine-tune `model` on `corpus` for `task` ("qa" or "cls"); returns the saved model folder."""
    import torch
    import transformers

    if task not in DEFAULTS:
        raise InputError(f"unknown task {task!r} (qa or cls)")
    params = params or FinetuneParams()
    d = DEFAULTS[task]
    lr = params.learning_rate or d["learning_rate"]
    epochs = params.epochs or d["epochs"]
    batch_size = params.batch_size or d["batch_size"]
    max_length = params.max_length or d["max_length"]
    seed = params.seed
    out = Path(out)
    corpus = CorpusSpec.coerce(corpus)
    if task == "cls":
        corpus = corpus.for_labels()
    records, selection = _select(corpus, params)
    if task == "qa" and params.answerable_only:  # tiny training sets: learn spans first, not the majority "no answer"
        records = [r for r in records if r.answers]
    transformers.set_seed(seed)
    tok = transformers.AutoTokenizer.from_pretrained(model, use_fast=True)
    if task == "qa":
        for r in records:
            if r.text_pair is None:
                raise InputError("QA record has no context", path=corpus.path, record=f"question {r.id}",
                                 field="context")
            if r.answers and (not r.answer_starts or r.answer_starts[0] < 0):
                raise InputError("answer text not found in the context (no answer_start)", path=corpus.path,
                                 record=f"question {r.id}", field="answers")
        rows = qa_features(tok, records, max_length, params.doc_stride or d["doc_stride"])
        net = transformers.AutoModelForQuestionAnswering.from_pretrained(model)
        collator = transformers.DataCollatorWithPadding(tok)  # pad each batch to its longest feature
    else:
        values = [r.label for r in records]
        if any(v is None for v in values):
            bad = next(r for r in records if r.label is None)
            raise InputError("record has no label", path=corpus.path, record=f"record {bad.id}", field="label")
        _say_label_counts(values, corpus, selection)
        uniq = sorted(set(values), key=lambda v: (str(type(v)), v))
        if set(uniq) <= {0, 1}:
            id2label = {0: "negative", 1: "positive"}
            to_id = {0: 0, 1: 1}
        else:
            id2label = {i: str(v) for i, v in enumerate(uniq)}
            to_id = {v: i for i, v in enumerate(uniq)}
        enc = tok([r.text for r in records], [r.text_pair for r in records] if records[0].text_pair else None,
                  truncation=True, max_length=max_length)
        rows = [{**{k: enc[k][i] for k in enc}, "labels": to_id[r.label]} for i, r in enumerate(records)]
        net = transformers.AutoModelForSequenceClassification.from_pretrained(
            model, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()})
        collator = transformers.DataCollatorWithPadding(tok)
    if params.keep_layers is not None:
        drop_layers(net, params.keep_layers)
    max_steps = params.max_steps
    save_steps = params.save_steps
    folder = OwnedFolder(out)
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
    info = {"task": task, "base": str(model), "data": corpus.as_dict(), "data_fingerprint": corpus.fingerprint(),
            "n_records": len(records), "n_features": len(rows), "learning_rate": lr, "epochs": epochs,
            "max_steps": max_steps, "batch_size": batch_size, "max_length": max_length, "seed": seed,
            "answerable_only": params.answerable_only, "selection": selection,
            "keep_layers": list(params.keep_layers) if params.keep_layers is not None else None,
            "train_loss": float(result.training_loss), "train_seconds": float(result.metrics.get("train_runtime", 0)),
            "resumed": resume}
    folder.write_json(INFO, info)
    return out
