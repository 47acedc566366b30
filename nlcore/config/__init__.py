"""Run configuration: the frozen dataclasses (`schema`), named presets (`presets`) and
`--set key=value` overrides (`overrides`)."""

from __future__ import annotations

from nlcore.config.overrides import apply_overrides, override
from nlcore.config.presets import PRESETS, preset
from nlcore.config.schema import (
    MODEL_KINDS,
    OPTIMIZERS,
    SEED_LEVELS,
    CMSConfig,
    DataConfig,
    LevelConfig,
    ModelConfig,
    StateConfig,
    SurpriseConfig,
    TrainConfig,
    from_dict,
    to_dict,
)

__all__ = [
    "MODEL_KINDS", "OPTIMIZERS", "PRESETS", "SEED_LEVELS", "CMSConfig", "DataConfig", "LevelConfig",
    "ModelConfig", "StateConfig", "SurpriseConfig", "TrainConfig", "apply_overrides", "from_dict",
    "override", "preset", "to_dict",
]
