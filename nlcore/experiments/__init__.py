"""Experiments: grids of configurations x seeds (`grid`), the notebooks' registered grids
(`registry`), and the task studies: multi-query associative recall (`mqar`) and the
associative-memory recall benchmark (`recall`)."""

from __future__ import annotations

from nlcore.experiments.grid import (
           METRICS,
           GridConfig,
           aggregate,
           collect,
           parse_config_arg,
           run_grid,
)
from nlcore.experiments.registry import (
           EXPERIMENTS,
           Experiment,
           Levers,
           Mode,
           ModelSize,
           run_experiment,
)

__all__ = ["EXPERIMENTS", "METRICS", "Experiment", "GridConfig", "Levers", "Mode", "ModelSize", "aggregate", "collect",
           "parse_config_arg", "run_experiment", "run_grid"]
