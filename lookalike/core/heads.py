"""The export tasks' static facts, one per model head (named `heads` so that `tasks/` is the one package of
tasks): what each is called, what its graph outputs, which transformers class loads
it, which output stands for the model; and the value a prediction kernel returns.

The exporter reads them (outputs, auto class, the output int8 is judged on), the engine (what the bench times,
what an export loads for). What differs between prediction tasks beyond these facts (options, kernels,
scoring, fine-tuning) lives in one spec per task, `lookalike.tasks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Task:
    name: str  # the export task, as the manifest records it
    outputs: tuple[str, ...]  # the traced graph's outputs
    primary: str  # the output that stands for the model: int8 parity, bench latency ("cls": the pooled CLS row)
    auto_class: str  # transformers' AutoModel class
    head_suffix: str | None  # a checkpoint's `architectures` entry ending in this has the task's head
    pooled: bool = False  # the graph gains pooled rows (graph.GRAPH_POOLINGS), checked and judged per pooling
    pairs: bool = False  # its inputs are text pairs (question, context): parity and int8 feeds are pairs
    per_token: bool = False  # its outputs are per token: compared inside the attention mask only
    labelled: bool = False  # the export records its labels; int8 is judged on label agreement over task texts


FEATURE_EXTRACTION = Task("feature-extraction", ("last_hidden_state",), "cls", "AutoModel", None, pooled=True)
QUESTION_ANSWERING = Task("question-answering", ("start_logits", "end_logits"), "start_logits",
                          "AutoModelForQuestionAnswering", "ForQuestionAnswering", pairs=True, per_token=True)
TEXT_CLASSIFICATION = Task("text-classification", ("logits",), "logits",
                           "AutoModelForSequenceClassification", "ForSequenceClassification", labelled=True)
TASKS = {t.name: t for t in (FEATURE_EXTRACTION, QUESTION_ANSWERING, TEXT_CLASSIFICATION)}


@dataclass(frozen=True)
class Predictions:
    """A prediction run's result (every task spec's kernel, local or on Ray): {id: prediction} and the task's other
    files by name ({} when none; QA: {"null_odds.json": {id: null score - best span score}})."""

    predictions: dict
    extra: dict[str, dict]


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
