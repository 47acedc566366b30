"""How far the compiled (aot_eager) HOPE model's outputs and gradients are from the uncompiled ones,
per tensor, in float32 and float64 (diagnostic for tests/accel/test_compile_memory.py on a GPU).

    PYTHONPATH=$PWD python3 scripts/gpu/compile_gap.py [cuda|cpu]
"""

from __future__ import annotations

import sys

import torch

sys.path.insert(0, "tests")
from test_compiling_memory import hope, inputs, pair, step  # noqa: E402


def main(device: str) -> None:
    for dtype in (torch.float32, torch.float64):
        off, on, _ = pair(hope)
        off, on = off.to(device, dtype), on.to(device, dtype)
        x, state = inputs(off)
        x = x.to(device)
        state = {k: v.to(device, dtype) for k, v in state.items()}
        (la, sa, ga), (lb, sb, gb) = step(off, x, state), step(on, x, state)
        rows = [("logits", la, lb), *((f"state {k}", sa[k], sb[k]) for k in sa), *((n, ga[n], gb[n]) for n in ga)]
        print(f"== {device} {dtype}")
        for name, a, b in sorted(rows, key=lambda r: -((r[1] - r[2]).abs().max() / r[1].abs().max()).item())[:8]:
            d = (a - b).abs()
            print(f"{name:32s} max|diff| {d.max().item():.2e}  max|a| {a.abs().max().item():.2e}  "
                  f"rel norm {(d.norm() / a.norm()).item():.2e}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cuda")
