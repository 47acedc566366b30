"""A run's checkpoint reduced to what sampling needs (config, tokenizer, model weights in float16).

    python3 scripts/reproduce/export_weights.py RUN/checkpoint.pt OUT.pt

`nlcore.training.sampling.load` reads the result like a full checkpoint; the weights are cast
back to the model's float32 when loaded, so a sample from it differs from the full checkpoint's
only by float16 rounding of the weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from nlcore.training import checkpoint as ckpt


def main(src: str, dst: str) -> None:
    payload = ckpt.load(src)
    weights = {k: v.half() if v.is_floating_point() else v for k, v in payload["model"].items()}
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    ckpt.save(dst, {"step": payload["step"], "config": payload["config"], "tokenizer": payload["tokenizer"],
                    "model": weights})
    print(f"{dst}: {Path(dst).stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(*sys.argv[1:3])
