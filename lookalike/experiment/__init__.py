"""Experiments: a config file in, the paper's tables and figures out.

    config   the file's keys, checked and typed (`parse_config`, `load_config`)
    cache    content-keyed step outputs (`StepCache`)
    steps    one function per step over a `Context`, each returning its artifact's path
    runner   `Experiment` (every model's steps, then the report) and `run_experiment`
"""

from .config import load_config, parse_config
from .runner import Experiment, run_experiment

__all__ = ["Experiment", "load_config", "parse_config", "run_experiment"]
