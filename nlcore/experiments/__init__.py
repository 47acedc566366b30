"""Experiments: grids of configurations x seeds (`grid`), an experiment as typed data
(`experiment`), the notebooks' registered experiments (`registry`), and the task studies:
multi-query associative recall (`mqar`) and the associative-memory recall benchmark (`recall`)."""

from __future__ import annotations

from nlcore.experiments.experiment import Experiment, Levers, Mode, ModelSize
from nlcore.experiments.grid import (
           METRICS,
           GridConfig,
           PhaseB,
           aggregate,
           collect,
           parse_config_arg,
           run_grid,
)
from nlcore.experiments.registry import EXPERIMENTS, run_experiment

__all__ = ["EXPERIMENTS", "METRICS", "Experiment", "GridConfig", "Levers", "Mode", "ModelSize", "PhaseB", "aggregate", "collect",
           "parse_config_arg", "run_experiment", "run_grid"]
