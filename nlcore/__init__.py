"""nlcore: Nested Learning (Behrouz et al., NeurIPS 2025), built to be checked.

Import-time is side-effect free: nothing here seeds, touches the disk or picks a device.
Sub-modules are imported on first attribute access so `import nlcore` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "adam_foreach", "bench", "checkpoint", "cli", "cms", "config", "data", "delta", "delta_optim", "distributed", "distributed_check", "dynamic_eval", "evaluate",
    "experiments", "fair_eval", "fastpath", "figures", "figures_ablations", "figures_bench", "figures_ci", "figures_cms",
    "figures_common", "figures_curves", "figures_recall", "figures_surprise", "memory", "models", "mqar",
    "notebook", "notebook_ablations", "notebook_checks", "notebook_compare", "notebook_experiment",
    "notebook_setup", "overrides", "paths", "plots_hope", "plotting", "presets", "recall",
    "repro", "results", "runner", "schedule", "sliced", "state", "stats", "surprise", "train",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"nlcore.{name}")
    raise AttributeError(f"module 'nlcore' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
