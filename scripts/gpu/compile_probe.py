"""Does another inductor mode make the seed step faster? (diagnostics, not a result)

    PYTHONPATH=$PWD python3 scripts/gpu/compile_probe.py MODE [CONFIG ...]

MODE: default | max-autotune-no-cudagraphs | coordinate (coordinate-descent tuning of the
Triton kernels). Patches nlcore.accel.compile's torch.compile call for this process only and prints
the bench's median step time of each configuration (nlcore.bench.step.NAMED names).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from nlcore.accel import compile as compiling
from nlcore.bench import step as bench


def patch(mode: str) -> None:
    plain = torch.compile

    def compile_with_mode(fn, **kw):
        if mode == "max-autotune-no-cudagraphs":
            kw["mode"] = mode
        elif mode == "coordinate":
            kw["options"] = {"coordinate_descent_tuning": True}
        return plain(fn, **kw)

    compiling.torch.compile = compile_with_mode


def main(mode: str, names: list[str]) -> None:
    if mode != "default":
        patch(mode)
    for name in names:
        t0 = time.perf_counter()
        tr = bench.build_trainer(bench.NAMED[name], smoke=False, steps=10**6, device="cuda")
        bench._steps(tr, 60)
        warm = time.perf_counter() - t0
        ms = [bench.time_window(tr, 50) * 1e3 for _ in range(9)]
        print(f"{mode:28s} {name:22s} median {statistics.median(ms):.3f} ms  min {min(ms):.3f}  "
              f"(build + warm-up {warm:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or ["seed_persistent"])
