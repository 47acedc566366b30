"""Where a training step's time goes on the GPU (diagnostics for the speed issues, not a result).

    PYTHONPATH=$PWD python3 scripts/gpu/profile_step.py [floor] [seed] [memory]

floor:   the cuDNN LSTM recurrence alone (forward + backward of one (B, 256, 256) window, bf16,
         CUDA-graphed): the floor under the seed model's step, for batches 32..512.
seed:    torch.profiler kernel tables of the seed model's and the plain LSTM's training steps.
memory:  torch.profiler tables of the chunk paths of nlcore.memory.speed (one 2048 window).
(Whether compiling helps: `python -m nlcore bench --configs seed_persistent seed_nocompile`.)
"""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from nlcore import bench
from nlcore.floor import recurrence_floor


def floor() -> None:
    for B in (32, 64, 128, 256, 512):
        lstm = torch.nn.LSTM(256, 256, batch_first=True).cuda()
        f = recurrence_floor(lstm, B, 256, amp=True)["ms_median"]
        print(f"FLOOR B={B:4d}: LSTM fwd+bwd {f:.3f} ms -> {B * 256 / f / 1e3:.2f} M chars/s at the floor", flush=True)


def table(fn, label: str, steps: int = 20, rows: int = 25) -> None:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    ka = prof.key_averages()
    dev = sum(e.self_device_time_total for e in ka if e.device_type == torch.autograd.DeviceType.CUDA)
    n = sum(e.count for e in ka if e.device_type == torch.autograd.DeviceType.CUDA)
    print(f"\n=== {label}: device time {dev / steps / 1e3:.3f} ms/step, {n / steps:.0f} kernels/step", flush=True)
    print(ka.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70), flush=True)


def seed() -> None:
    for label, ov in (("seed_persistent", bench.NAMED["seed_persistent"]), ("plain_lstm", bench.NAMED["plain_lstm"]),
                      ("seed_persistent B=256", ["data.batch_size=256"])):
        tr = bench.build_trainer(ov, smoke=False, steps=10**6, device="cuda")
        table(lambda tr=tr: bench._steps(tr, 1), label)


def memory() -> None:
    from nlcore.memory.speed import _case

    for kind in ("linear", "mlp", "hope_layer"):
        fn = _case(kind, "chunk", 8, 4, 2048, 64, 64, torch.device("cuda"))
        table(fn, f"{kind} chunk path, T=2048", steps=3, rows=20)


if __name__ == "__main__":
    for part in sys.argv[1:] or ["floor", "seed", "memory"]:
        {"floor": floor, "seed": seed, "memory": memory}[part]()
