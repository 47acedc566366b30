"""Named presets (seed, seed_prototype, smoke): `TrainConfig`s that differ only in numbers, never in code paths."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nlcore.config.overrides import override
from nlcore.config.schema import (
    SEED_LEVELS,
    CMSConfig,
    DataConfig,
    LevelConfig,
    ModelConfig,
    TrainConfig,
)


def _seed() -> TrainConfig:
    # The prototype's system, every part trained: WikiText-2 characters, 2000 steps of 32 x 256,
    # CMS chunks 1/16/256, persistent LSTM state.
    return TrainConfig()


def _seed_prototype() -> TrainConfig:
    # The prototype as it ran: Adam with lr 3e-4 / C per level, summed gradients, no norm or
    # residual, the embedding and head untrained (compat switch), no schedule, no clipping.
    levels = tuple(LevelConfig(n, chunk=c, optimizer="adam", lr=3e-4) for n, c in
                   (("fast", 1), ("medium", 16), ("slow", 256)))
    return TrainConfig(
        name="seed_prototype", compat="prototype", schedule="constant", warmup=0,
        model=ModelConfig(norm_residual=False, zero_init_ffn_out=False, activation="relu"),
        cms=CMSConfig(levels=levels, aggregation="sum", lr_policy="divide_by_chunk", grad_clip=0.0),
    )


def _smoke() -> TrainConfig:
    # The seed preset with smaller numbers: seconds on a CPU, synthetic corpus, same code paths.
    levels = tuple(replace(lv, chunk=c) for lv, c in zip(SEED_LEVELS, (1, 4, 16)))
    return TrainConfig(
        name="smoke", steps=60, warmup=10, eval_every=30, eval_windows=8, log_every=10, ckpt_every=30,
        data=DataConfig(corpus="synthetic", batch_size=8, seq_len=32, synth_chars=60_000,
                        synth_gap_min=40, synth_gap_max=80),
        model=ModelConfig(d_model=32, d_ff=64),
        cms=CMSConfig(levels=levels), device="cpu", amp="off", deterministic=True,
    )


PRESETS = {"seed": _seed, "seed_prototype": _seed_prototype, "smoke": _smoke}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A named preset, with optional `dotted.key=value` overrides (values typed or strings)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; presets are {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    for key, value in overrides.items():
        cfg = override(cfg, key.replace("__", "."), value)
    return cfg.validate()
