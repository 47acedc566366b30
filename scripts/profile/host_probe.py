"""Is the training step host-bound? (diagnostics for the speed issue, not a result)

    PYTHONPATH=$PWD python3 scripts/profile/host_probe.py [CONFIG ...]   (names of nlcore.bench.step.NAMED)

For each configuration: the device time per step (CUDA events over 50 steps, the bench's way)
and the host's own time per step measured while the GPU is kept busy by a long sleep kernel
queued first, so no launch waits on the device (a hidden host-device sync would show up as a
host time of ~the sleep). If host >= device, the step is bound by Python and launches. Then a
cProfile of 20 host-only steps of the first configuration (top functions by own time).
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import sys
import time

import torch

from nlcore.bench import step as bench


def host_ms(tr, n: int = 20, reps: int = 5) -> float:
    out = []
    for _ in range(reps):
        torch.cuda.synchronize()
        torch.cuda._sleep(int(3e8))  # ~150 ms of device time queued ahead of the steps
        t0 = time.perf_counter()
        bench._steps(tr, n)
        out.append((time.perf_counter() - t0) / n * 1e3)
        torch.cuda.synchronize()
    return statistics.median(out)


def main(names: list[str]) -> None:
    first = None
    for name in names:
        tr = bench.build_trainer(bench.NAMED[name], smoke=False, steps=10**6, device="cuda")
        bench._steps(tr, 60)
        dev = statistics.median(bench.time_window(tr, 50) * 1e3 for _ in range(5))
        h = host_ms(tr)
        print(f"{name:28s} device-timed {dev:.3f} ms/step   host-only {h:.3f} ms/step", flush=True)
        first = first or tr
    torch.cuda.synchronize()
    torch.cuda._sleep(int(6e8))
    prof = cProfile.Profile()
    prof.enable()
    bench._steps(first, 20)
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(40)


if __name__ == "__main__":
    main(sys.argv[1:] or ["seed_persistent", "seed_surprise_hooks", "plain_lstm", "seed_batch256"])
