"""Timing and kernel tables of a CUDA-graphed step, shared by the GPU probes (mlp_probe.py,
hope_probe.py; diagnostics, not results). Run those scripts as files (`python3 scripts/gpu/X.py`):
their folder is then on sys.path and this module imports as `graph_probe`."""

from __future__ import annotations

import torch

from nlcore.accel.cuda_graph import capture


def graph_ms(step, reps: int = 50, windows: int = 5) -> tuple[list[float], torch.cuda.CUDAGraph]:
    """step captured in a CUDA graph (nlcore.accel.cuda_graph.capture), then `windows` timings of `reps`
    replays each (CUDA events): ms per replay by window, and the graph."""
    graph = capture(step, torch.device("cuda"), warmup=5)
    ms = []
    for _ in range(windows):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        ms.append(start.elapsed_time(end) / reps)
    return ms, graph


def kernel_report(graph: torch.cuda.CUDAGraph, label: str, rows: int = 30, listing: bool = False,
                  replays: int = 10) -> None:
    """torch.profiler's kernel table of `replays` replays (by device time); listing: one replay's
    kernels in order (start offset and duration in us)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize()
    ka = prof.key_averages()
    n = sum(e.count for e in ka if e.device_type == torch.autograd.DeviceType.CUDA) / replays
    print(f"{label}: {n:.0f} kernels per replay", flush=True)
    print(ka.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=90), flush=True)
    if listing:
        ev = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                    key=lambda e: e.time_range.start)
        per = len(ev) // replays
        one = ev[per * (replays // 2):per * (replays // 2 + 1)]
        t0 = one[0].time_range.start
        for e in one:
            print(f"{e.time_range.start - t0:9.1f} {e.time_range.elapsed_us():7.1f}  {e.name[:100]}")
