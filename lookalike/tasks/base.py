"""What a prediction task is to lookalike: one `TaskSpec` per task, each in its own file (`qa.py`, `cls.py`).

A spec owns everything that differs between tasks: its options type, the kernel that turns a loaded export and
records into predictions, the files a prediction run writes, how predictions are scored against the data, and
how a checkpoint is fine-tuned for it (defaults, training features, the check after training). Every layer
asks the spec instead of testing a task name: the predict job, the Ray actors, the scorer, `finetune`, the
experiment's steps and the CLI. Adding a task (NLI, token classification) is one new file and one line in
`__init__.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from ..core.heads import Predictions, Task
from ..data import CorpusSpec

__all__ = ["Options", "Predictions", "Scored", "TaskSpec"]


@dataclass(frozen=True)
class Options:
    """A task's prediction options: validated once, recorded as `as_dict()` (predict_info.json, Ray parts)."""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Scored:
    """How one predictions file scored: the metrics, the error ids, per-id scores and the error criterion."""

    metrics: dict
    errors: list[str]
    per_id: dict[str, dict]
    criterion: str


class TaskSpec:
    """One prediction task. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]  # `predict --task`, errors.json "task", the experiment's own name
    export: ClassVar[Task]  # the export's static facts (core.heads): outputs, auto class, int8 output
    role: ClassVar[str]  # the experiment model's role that holds this task's checkpoint
    eval_dataset: ClassVar[str]  # the experiment's dataset role its predictions are scored on
    label: ClassVar[str]  # how reports name it ("QA", "classification")
    aliases: ClassVar[tuple[str, ...]] = ()
    files: ClassVar[tuple[str, ...]] = ("predictions.json",)  # what a prediction run writes (+ predict_info.json)
    finetune_defaults: ClassVar[dict[str, Any]]

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    instance: ClassVar[str]  # the module-level name of the one instance (pickled by reference, e.g. to Ray actors)

    def __reduce__(self):
        return self.instance

    # ------------------------------------------------------------------ prediction
    def options(self, params) -> Options:
        """The typed options of a run from `PredictParams` (InputError for values the task refuses)."""
        raise NotImplementedError

    def prepare(self, corpus: CorpusSpec) -> CorpusSpec:
        """The corpus as this task reads it (classification asks for labels)."""
        return corpus

    def check_records(self, records: list, model, corpus: CorpusSpec) -> None:
        """Refuse records the model cannot be scored on, before any work."""

    def predict(self, model, records: list, options: Options, tokens=None) -> Predictions:
        raise NotImplementedError

    def reads_tokens(self) -> bool:
        """Whether a token cache (`lookalike tokenize`) can stand in for the text."""
        return False

    # ------------------------------------------------------------------ scoring
    def check_predictions(self, preds: dict, where) -> None:
        """Refuse a predictions file whose values are not this task's."""

    def score(self, records: list, preds: dict, *, where, known: set, extra: list, na_probs=None,
              na_prob_thresh: float = 1.0, f1_below: float | None = None, labels: dict | None = None) -> Scored:
        raise NotImplementedError

    def side_files(self, folder) -> dict:
        """The extra files of a prediction folder that scoring reads (QA: the no-answer odds)."""
        return {}

    # ------------------------------------------------------------------ fine-tuning
    def training_rows(self, tok, records: list, max_length: int, params, corpus: CorpusSpec, selection: str):
        """(the records trained on, their features, the kwargs of the task's transformers class's from_pretrained,
        what `after_training` needs)."""
        raise NotImplementedError

    def after_training(self, net, tok, records, state, loss: float, max_length: int, eval_data, corpus) -> dict:
        """What the fine-tune record adds after training (classification: held-out accuracy, warnings)."""
        return {}
