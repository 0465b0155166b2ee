"""The one task table: what each export task is called, what its graph outputs, which transformers class loads it.

Every layer reads it: the exporter (outputs, auto class, the output int8 is judged on), the engine (what the
bench times, what `predict --task qa|cls` loads), the experiment (which export a role needs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Task:
    name: str  # the export task, as the manifest records it
    short: str | None  # the prediction task's short name (`predict --task`), None for feature extraction
    outputs: tuple[str, ...]  # the traced graph's outputs
    primary: str  # the output that stands for the model: int8 parity, bench latency ("cls": the pooled CLS row)
    auto_class: str  # transformers' AutoModel class
    head_suffix: str | None  # a checkpoint's `architectures` entry ending in this has the task's head


FEATURE_EXTRACTION = Task("feature-extraction", None, ("last_hidden_state",), "cls", "AutoModel", None)
QUESTION_ANSWERING = Task("question-answering", "qa", ("start_logits", "end_logits"), "start_logits",
                          "AutoModelForQuestionAnswering", "ForQuestionAnswering")
TEXT_CLASSIFICATION = Task("text-classification", "cls", ("logits",), "logits",
                           "AutoModelForSequenceClassification", "ForSequenceClassification")
TASKS = {t.name: t for t in (FEATURE_EXTRACTION, QUESTION_ANSWERING, TEXT_CLASSIFICATION)}
BY_SHORT = {t.short: t for t in TASKS.values() if t.short}
# an experiment model's roles: which export each one needs ("encoder": the fine-tuned checkpoint's encoder)
ROLE_TASK = {"base": FEATURE_EXTRACTION, "encoder": FEATURE_EXTRACTION, "qa": QUESTION_ANSWERING,
             "sentiment": TEXT_CLASSIFICATION}


def prediction_task(short: str) -> Task:
    """The task of `predict --task qa|cls`; InputError for anything else."""
    if short not in BY_SHORT:
        raise InputError(f"unknown task {short!r} ({' or '.join(BY_SHORT)})")
    return BY_SHORT[short]


def label_index(label, labels: dict[int, str], where: str, path) -> int:
    """Map a data label (int id, or label name, case-insensitive) to the model's label id."""
    if isinstance(label, (int, np.integer)) or (isinstance(label, str) and label.strip().lstrip("-").isdigit()):
        i = int(label)
        if i in labels:
            return i
    elif isinstance(label, str):
        names = {v.lower(): k for k, v in labels.items()}
        if label.lower() in names:
            return names[label.lower()]
        aliases = {"neg": "negative", "pos": "positive"}
        if aliases.get(label.lower()) in names:
            return names[aliases[label.lower()]]
    raise InputError(f"label {label!r} is not one of the model's labels {labels}", path=path, record=where,
                     field="label")
