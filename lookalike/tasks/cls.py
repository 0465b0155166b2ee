"""Sequence classification (sentiment, topics): options, the kernel (argmax labels and probabilities),
accuracy scoring against data labelled by id or by name, and fine-tuning with a check that the classifier
learned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..analysis.scoring import cls_eval
from ..core.manifest import labels as manifest_labels
from ..core.heads import TEXT_CLASSIFICATION as EXPORT
from ..core.heads import label_index
from ..data import CorpusSpec
from ..engine.batching import run_batched, tokenize
from ..engine.runtime import OnnxModel
from ..errors import InputError, ModelError
from ..notes import NOTICE
from .base import Options, Predictions, Scored, TaskSpec

log = logging.getLogger(__name__)

MAX_LENGTH = 512  # the default prediction length (BERT's positions)


@dataclass(frozen=True)
class ClsOptions(Options):
    max_length: int = MAX_LENGTH
    batch_tokens: int | None = None


def predict_cls(model: OnnxModel, records, *, max_length: int = 512, batch_tokens: int | None = None,
                chunk: int = 1024, tokens=None) -> dict:
    """{id: {"label": name, "label_id": i, "probs": [...]}} for classification records.

    tokens: a TokenCache of exactly these records (same order) at this max length, read instead of tokenizing.
    """
    labels = manifest_labels(model.manifest)
    out = {}
    records = list(records)
    batch_tokens = batch_tokens or 2048
    max_length = model.clamp(max_length)
    cached = tokens.windows(0, chunk, 1 << 62, model.vocab_size) if tokens is not None else None
    for start in range(0, len(records), chunk):
        part = records[start:start + chunk]
        if cached is not None:
            _, ids, enc, _ = next(cached)
            if ids != [r.id for r in part]:
                raise ModelError(f"{tokens.path}: token cache rows do not match the records at row {start}")
        else:
            enc = tokenize(model.tokenizer, part, max_length)
        (logits,) = run_batched(model, enc, ["logits"], batch_tokens)
        for r, lg in zip(part, logits):
            lg = np.asarray(lg, dtype=np.float64)
            p = np.exp(lg - lg.max())
            p /= p.sum()
            i = int(p.argmax())
            out[r.id] = {"label": labels.get(i, str(i)), "label_id": i, "probs": [round(float(x), 6) for x in p]}
    return out


def say_label_counts(labels: list, corpus: CorpusSpec, selection: str) -> None:
    from collections import Counter

    counts = Counter(labels)
    log.log(NOTICE, "training on records of %s (%s); labels: %s", corpus.path, selection,
            ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))))
    if len(counts) < 2:
        log.warning("only one label (%s) in the training records: the classifier cannot learn to tell classes "
                    "apart%s", next(iter(counts)), " (is the file sorted by label? drop --no-shuffle)"
                    if corpus.limit else "")
        return
    rare = [k for k, v in counts.items() if v < 0.1 * len(labels)]
    if rare:
        log.warning("labels %s are under 10%% of the training records", sorted(map(str, rare)))


def check_learned(net, tok, records, to_id: dict, id2label: dict, loss: float, max_length: int, eval_data,
                   corpus) -> dict:
    """Accuracy on held-out records (eval_data) or a training sample, and one-line warnings when the classifier did
    not learn: a loss near ln(classes), or predictions collapsed onto one class."""
    import math
    from collections import Counter

    import torch

    out: dict = {}
    n_classes = len(id2label)
    guessing = abs(loss - math.log(n_classes)) < 0.05 * math.log(n_classes)
    if eval_data is not None:
        held = list(CorpusSpec.coerce(eval_data).for_labels().records())
        where = "held-out"
    else:
        held = records[:256]
        where = "training sample"
    unknown = [r for r in held if r.label not in to_id]
    if unknown:
        raise InputError(f"label {unknown[0].label!r} was not among the training labels", record=unknown[0].id,
                         field="label")
    net.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(held), 32):
            part = held[i:i + 32]
            enc = tok([r.text for r in part], [r.text_pair for r in part] if part[0].text_pair else None,
                      truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            enc = {k: v.to(net.device) for k, v in enc.items()}
            preds.extend(net(**enc).logits.argmax(-1).tolist())
    gold = [to_id[r.label] for r in held]
    acc = sum(p == g for p, g in zip(preds, gold)) / max(len(held), 1)
    counts = Counter(preds)
    top, n_top = counts.most_common(1)[0] if counts else (None, 0)
    out[f"accuracy_{where.replace(' ', '_').replace('-', '_')}"] = round(acc, 4)
    out["n_scored"] = len(held)
    out["predicted_labels"] = {id2label[k]: v for k, v in sorted(counts.items())}
    log.log(NOTICE, "%s accuracy %.3f on %d records", where, acc, len(held))
    majority = max(Counter(gold).values()) / len(gold) if gold else 0.0
    if guessing:  # said with the accuracy beside it, so the two lines never contradict each other
        if acc <= majority + 0.05:
            log.warning("train loss %.3f is ln(%d) = %.3f, what guessing gives, and %s accuracy %.3f is what always "
                        "answering the commonest label gives (%.3f): the classifier has not learned (raise "
                        "--learning-rate or --epochs, or give more records)", loss, n_classes, math.log(n_classes),
                        where, acc, majority)
        else:
            log.log(NOTICE, "train loss %.3f is near ln(%d) = %.3f although %s accuracy is %.3f: the classifier "
                    "ranks the classes but is barely confident (more epochs would sharpen it)", loss, n_classes,
                    math.log(n_classes), where, acc)
    if len(held) >= 20 and n_top >= 0.95 * len(held) and len(set(gold)) > 1:
        log.warning("the classifier predicts %r for %d of %d %s records: it has collapsed onto one class (raise "
                    "--learning-rate or --epochs, or give more records)", id2label[top], n_top, len(held), where)
    return out


class ClassificationTask(TaskSpec):
    name = "cls"
    export = EXPORT
    instance = "CLASSIFICATION"
    role = "sentiment"
    label = "classification"
    eval_dataset = "cls_eval"
    aliases = ("sentiment",)
    # cls at 2e-5 stayed at chance on 1,000 IMDB reviews in one epoch (loss 0.690 = ln 2, 484 of 500 "positive");
    # at 1e-4 the same run reached 78.8% (issue 33's measurement on the packaged MiniLM)
    finetune_defaults = {"learning_rate": 1e-4, "epochs": 2.0, "max_length": 256, "batch_size": 16}

    def options(self, params) -> ClsOptions:
        return ClsOptions(params.cls_max_length or params.max_length or MAX_LENGTH, params.batch_tokens)

    def prepare(self, corpus):
        return corpus.for_labels()

    def check_records(self, records, model, corpus) -> None:
        labels = manifest_labels(model.manifest)
        for r in records:
            if r.label is not None:
                label_index(r.label, labels, f"record {r.id}", corpus.path)

    def reads_tokens(self) -> bool:
        return True

    def predict(self, model: OnnxModel, records: list, options: ClsOptions, tokens=None) -> Predictions:
        return Predictions(predict_cls(model, records, **options.as_dict(), tokens=tokens), {})

    def score(self, records, preds, *, where, known, extra, na_probs=None, na_prob_thresh=1.0, f1_below=None,
              labels=None) -> Scored:
        metrics, correct = cls_eval(records, preds, labels)
        errors = sorted(q for q, c in correct.items() if not c)
        return Scored(metrics, errors, {q: {"correct": c} for q, c in correct.items()}, "prediction != label")

    def training_rows(self, tok, records, max_length, params, corpus, selection):
        values = [r.label for r in records]
        if any(v is None for v in values):
            bad = next(r for r in records if r.label is None)
            raise InputError("record has no label", path=corpus.path, record=f"record {bad.id}", field="label")
        say_label_counts(values, corpus, selection)
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
        kwargs = {"num_labels": len(id2label), "id2label": id2label,
                  "label2id": {v: k for k, v in id2label.items()}}
        return records, rows, kwargs, (to_id, id2label)

    def after_training(self, net, tok, records, state, loss, max_length, eval_data, corpus) -> dict:
        to_id, id2label = state
        return check_learned(net, tok, records, to_id, id2label, loss, max_length, eval_data, corpus)


CLASSIFICATION = ClassificationTask()
