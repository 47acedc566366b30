"""Training and evaluation: the one training loop (`trainer`), held-out bits per character
(`evaluate`), dynamic evaluation, atomic checkpoints, learning-rate schedules, and text sampled
from a trained run (`sample`)."""

from __future__ import annotations

from nlcore.training.evaluate import evaluate
from nlcore.training.sampling import sample
from nlcore.training.trainer import Trainer, train

__all__ = ["Trainer", "evaluate", "sample", "train"]
