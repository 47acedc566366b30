"""nlcore: Nested Learning (Behrouz et al., NeurIPS 2025), built to be checked.

The public API, by topic. Names load on first use, so ``import nlcore`` is cheap and has no side
effects (nothing seeds, touches the disk or picks a device).

- configuration: `TrainConfig` and its parts, `preset`, `apply_overrides`
- the paper's mechanisms: `CMS` (01), `Surprise` (02), `StateCarrier` (03), `delta` (04)
- data and models: `prepare`, `load_corpus`, `CharTokenizer`, `CharStream`, `build_model`
- training and evaluation: `Trainer`, `train`, `evaluate`
- experiments and results: `run_experiment`, `EXPERIMENTS`, `read_experiment`, `summarize`
- notebooks: `notebook` (setup, experiments, quoted numbers), `figures`, `widgets`
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_NAMES = {
    "TrainConfig": "nlcore.config", "DataConfig": "nlcore.config", "ModelConfig": "nlcore.config",
    "CMSConfig": "nlcore.config", "LevelConfig": "nlcore.config", "StateConfig": "nlcore.config",
    "SurpriseConfig": "nlcore.config", "preset": "nlcore.config", "apply_overrides": "nlcore.config",
    "CMS": "nlcore.cms", "Surprise": "nlcore.surprise", "StateCarrier": "nlcore.state",
    "prepare": "nlcore.data", "load_corpus": "nlcore.data", "CharTokenizer": "nlcore.data",
    "CharStream": "nlcore.data", "build_model": "nlcore.models", "SequenceModel": "nlcore.models",
    "Trainer": "nlcore.training", "train": "nlcore.training", "evaluate": "nlcore.training",
    "sample": "nlcore.training",
    "run_experiment": "nlcore.experiments", "EXPERIMENTS": "nlcore.experiments",
    "read_experiment": "nlcore.results", "summarize": "nlcore.stats",
}
# public module shortcuts -> the module
_MODULES = {
    "notebook": "nlcore.report.notebook", "figures": "nlcore.report.figures", "widgets": "nlcore.report.widgets",
    "test_time": "nlcore.report.test_time", "delta": "nlcore.delta", "recall": "nlcore.experiments.recall",
}
# every subpackage and top-level module, reachable as an attribute once imported
_SUBMODULES = ("accel", "bench", "cli", "cms", "config", "data", "delta", "experiments", "models", "ops", "optim",
               "paths", "report", "repro", "results", "state", "stats", "surprise", "training")

__all__ = sorted([*_NAMES, *_MODULES])


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    if name in _SUBMODULES:
        return importlib.import_module(f"nlcore.{name}")
    raise AttributeError(f"module 'nlcore' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__, *_SUBMODULES})
