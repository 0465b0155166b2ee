"""The task registry: one `TaskSpec` per prediction task (`qa.py`, `cls.py`), found by name or alias.

"qa" is extractive question answering (SQuAD v2); "cls" is sequence classification ("sentiment", the
experiment's role for it, and "text-classification", the export's task name, are aliases).
"""

from __future__ import annotations

from ..errors import InputError
from .base import Options, Predictions, Scored, TaskSpec

__all__ = ["Options", "Predictions", "Scored", "TaskSpec", "get", "for_role", "NAMES", "SPECS"]

SPECS: dict[str, TaskSpec] = {}


def _register() -> None:
    from .cls import CLASSIFICATION
    from .qa import QUESTION_ANSWERING

    for spec in (QUESTION_ANSWERING, CLASSIFICATION):
        SPECS[spec.name] = spec


_register()
NAMES = tuple(SPECS)  # the names `--task` takes
_ALIASES = {alias: spec for spec in SPECS.values() for alias in (spec.name, *spec.aliases, spec.export.name)}


def get(name: str | TaskSpec) -> TaskSpec:
    """The spec of a task name or alias (a spec is returned as is); InputError for anything else."""
    if isinstance(name, TaskSpec):
        return name
    if name not in _ALIASES:
        raise InputError(f"unknown task {name!r} ({' or '.join(NAMES)})", field="task")
    return _ALIASES[name]


def for_role(role: str) -> TaskSpec:
    """The task an experiment model's role ("qa", "sentiment") is fine-tuned and predicted for."""
    for spec in SPECS.values():
        if spec.role == role:
            return spec
    raise InputError(f"no task for the role {role!r}", field="role")
