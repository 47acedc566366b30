"""Training and evaluation: the one training loop (`trainer`), held-out bits per character
(`evaluate`), dynamic evaluation, atomic checkpoints and learning-rate schedules."""

from __future__ import annotations

from nlcore.training.evaluate import evaluate
from nlcore.training.trainer import Trainer, train

__all__ = ["Trainer", "evaluate", "train"]
