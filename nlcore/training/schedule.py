"""Learning-rate multipliers as a function of the 1-based global step.

``cosine``: linear warm-up from 0 over ``warmup`` steps, then a half cosine from 1 down to
``min_ratio`` at ``total`` steps. ``constant``: 1 everywhere (the prototype had no schedule).
Every CMS level multiplies its own base learning rate by the same multiplier at its updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def lr_multiplier(kind: str, total: int, warmup: int = 0, min_ratio: float = 0.1) -> Callable[[int], float]:
    if kind == "constant":
        return lambda step: 1.0
    if kind != "cosine":
        raise ValueError(f"schedule: unknown kind {kind!r} (constant | cosine)")

    def f(step: int) -> float:
        if warmup > 0 and step <= warmup:
            return step / warmup  # linear warm-up: 1/warmup, ..., 1
        span = max(1, total - warmup)
        progress = min(1.0, (step - warmup) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f
