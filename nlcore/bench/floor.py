"""The recurrence floor: what the LSTM alone costs per training step, the lower bound of a step.

A training step of an LSTM model cannot be faster than its recurrence: the forward and backward
of ``nn.LSTM`` over the window (cuDNN on a GPU), input gradient included, since the embedding is
trained. `recurrence_floor` times exactly that, on the model's own LSTM, shapes and precision
(bf16 autocast when the trainer uses it), captured in a CUDA graph as the training step is, so
the launch overhead is the same as in the graphed step; on a CPU it runs eagerly. `nlcore.bench.step`
reports each LSTM configuration's step time as a multiple of its floor (``ratio_to_floor``):
everything above 1 is embedding, feed-forward levels, head, loss, optimizer and bookkeeping.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

from nlcore.accel.cuda_graph import capture
from nlcore.accel.precision import autocast_ctx


def ms_per_call(fn, n: int, device: torch.device | str) -> float:
    """Mean ms per call of `fn` over `n` back-to-back calls: timed by CUDA events on a CUDA
    device (synchronised before, so earlier work is not counted), by the wall clock elsewhere.
    The one timer of the benchmarks (nlcore.bench.step.time_window, recurrence_floor, check_fastpath)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) * 1e3 / n
    torch.cuda.synchronize(dev)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / n


def recurrence_floor(lstm: torch.nn.LSTM, batch_size: int, seq_len: int, *, amp: bool,
                     windows: int = 5, steps: int = 50, graphed: bool | None = None) -> dict:
    """Median ms of forward + backward of `lstm` over a (B, T, d_in) window from a zero state,
    with the input gradient; over `windows` timing windows of `steps` replays each. Runs on a copy
    of `lstm`: the model's parameters and gradients are left alone. `graphed` (default: on CUDA)
    replays a CUDA graph, as the training step does; False times the eager calls."""
    lstm = copy.deepcopy(lstm)
    for q in lstm.parameters():
        q.grad = None
    p = next(lstm.parameters())
    dev = p.device
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(batch_size, seq_len, lstm.input_size, device=dev, dtype=p.dtype, generator=g,
                    requires_grad=True)
    z = torch.zeros(1, batch_size, lstm.hidden_size, device=dev, dtype=p.dtype)
    gy = torch.randn(batch_size, seq_len, lstm.hidden_size, device=dev, generator=g)

    def fwd_bwd():
        with autocast_ctx(dev, amp):
            y, _ = lstm(x, (z, z))
        torch.autograd.backward(y, gy.to(y.dtype))  # into x.grad and the copy's .grad

    cuda = dev.type == "cuda"
    graphed = cuda if graphed is None else graphed
    if graphed and not cuda:
        raise ValueError(f"recurrence_floor: graphed=True needs a CUDA LSTM, got {dev.type!r}")
    fn = capture(fwd_bwd, dev).replay if graphed else fwd_bwd
    for _ in range(5):
        fn()
    times = [ms_per_call(fn, steps, dev) for _ in range(windows)]
    return {"what": "nn.LSTM forward + backward (input and weight gradients) of one window",
            "batch_size": batch_size, "seq_len": seq_len, "d_in": lstm.input_size, "hidden": lstm.hidden_size,
            "amp": amp, "graphed": graphed, "ms_windows": times, "ms_median": statistics.median(times)}
