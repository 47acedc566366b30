"""Where a training step's time goes on the GPU (diagnostics for the speed issues, not a result).

    PYTHONPATH=$PWD python3 scripts/profile/profile_step.py [floor] [seed] [memory]

floor:   the cuDNN LSTM recurrence alone (forward + backward of one (B, 256, 256) window, bf16,
         CUDA-graphed): the floor under the seed model's step, for batches 32..512.
seed:    torch.profiler kernel tables of the seed model's and the plain LSTM's training steps.
memory:  torch.profiler tables of the chunk paths of nlcore.bench.memory_paths (one 2048 window).
gaps:    the seed step's kernel timeline (a torch.profiler trace of 5 steps): device busy vs span,
         and the longest idle gaps between consecutive kernels with the kernels around them.
models:  torch.profiler tables and timelines of the 06 models' training steps (the shapes of
         results/bench/models_06.json; MODELS=a,b picks some, LISTING=1 lists one step's kernels).
ops:     aten operators with their input shapes by device time (MODELS, default hope_outer; no CUDA graph).
phases:  HOPE's in-forward step split into its passes by device time and kernel count (MODELS,
         default hope; no CUDA graph, still compiled): the segments' forward alone (the inner
         autograd.grad replaced by zeros), the forward with the inner gradients, the whole step
         (its difference: the outer forward and backward over the window and the optimizer).
flops:   FLOPs (torch's count, two per multiply-add) and dispatched aten operators of one
         training window, eager, on any device (DEVICE, default cpu; MODELS, default
         hope_outer,hope, takes any `nlcore bench` configuration, 07_width:hope for one): the
         forward without grad (HOPE: its segments with their inner gradients), the forward with
         grad (HOPE: the segments, then the outer pass over the window) and the backward. OUT=FILE
         also writes them as JSON (results/bench/flops_06.json: nlcore.report.figures.plot_flops_vs_time).
ROWS=N (environment) lengthens the tables (default 25 rows).
(Whether compiling helps: `python -m nlcore bench --configs seed_persistent seed_nocompile`.)
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from nlcore.bench import step as bench
from nlcore.bench.floor import recurrence_floor


def floor() -> None:
    for B in (32, 64, 128, 256, 512):
        lstm = torch.nn.LSTM(256, 256, batch_first=True).cuda()
        f = recurrence_floor(lstm, B, 256, amp=True)["ms_median"]
        print(f"FLOOR B={B:4d}: LSTM fwd+bwd {f:.3f} ms -> {B * 256 / f / 1e3:.2f} M chars/s at the floor", flush=True)


def profiled(fn, steps: int, warmup: int = 10, cpu: bool = True):
    """The key averages of `steps` calls of fn after `warmup` calls, and (device ms, kernels) per call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA] if cpu else [ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    ka = prof.key_averages()
    dev = [e for e in ka if e.device_type == torch.autograd.DeviceType.CUDA]
    return ka, sum(e.self_device_time_total for e in dev) / steps / 1e3, sum(e.count for e in dev) / steps


def table(fn, label: str, steps: int = 20, rows: int | None = None) -> None:
    rows = rows or int(os.environ.get("ROWS", 25))
    ka, ms, n = profiled(fn, steps)
    print(f"\n=== {label}: device time {ms:.3f} ms/step, {n:.0f} kernels/step", flush=True)
    print(ka.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70), flush=True)


def seed() -> None:
    for label, ov in (("seed_persistent", bench.NAMED["seed_persistent"]), ("plain_lstm", bench.NAMED["plain_lstm"]),
                      ("seed_persistent B=256", ["data.batch_size=256"])):
        tr = bench.build_trainer(ov, smoke=False, steps=10**6, device="cuda")
        table(lambda tr=tr: bench._steps(tr, 1), label)


def memory() -> None:
    from nlcore.bench.memory_paths import _case

    for kind in ("linear", "mlp", "hope_layer"):
        fn = _case(kind, "chunk", 8, 4, 2048, 64, 64, torch.device("cuda"))
        table(fn, f"{kind} chunk path, T=2048", steps=3, rows=20)


def timeline(fn, label: str, steps: int = 5, top: int = 40, listing: bool = True) -> None:
    """Kernel timeline of `steps` calls of fn (after warm-up): device busy vs span, the longest idle
    gaps between consecutive kernels, and (listing) one call's kernels in order."""
    import json
    import tempfile

    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    path = str(Path(tempfile.mkdtemp()) / "trace.json")
    prof.export_chrome_trace(path)
    ev = sorted((e for e in json.load(open(path))["traceEvents"]
                 if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                key=lambda e: e["ts"])
    busy = sum(e["dur"] for e in ev)
    span = ev[-1]["ts"] + ev[-1]["dur"] - ev[0]["ts"]
    print(f"\n=== {label} timeline: {len(ev) / steps:.0f} kernels/step, busy {busy / steps / 1e3:.3f} ms/step, "
          f"span {span / steps / 1e3:.3f} ms/step", flush=True)
    gap = [(ev[i + 1]["ts"] - ev[i]["ts"] - ev[i]["dur"], ev[i]["name"][:60], ev[i + 1]["name"][:60])
           for i in range(len(ev) - 1)]
    hist = [sum(1 for g in gap if lo <= g[0] < hi) for lo, hi in ((-1e9, 1), (1, 2), (2, 4), (4, 8), (8, 1e9))]
    print("gaps <1, 1-2, 2-4, 4-8, >=8 us:", hist, " total idle per step (us):",
          round(sum(max(g[0], 0) for g in gap) / steps, 1))
    durs = sorted(e["dur"] for e in ev)
    print("kernel durations (us): median", durs[len(durs) // 2], " share of busy time in kernels < 5 us:",
          round(sum(d for d in durs if d < 5) / busy, 3))
    for g in sorted(gap, reverse=True)[:top]:
        print(f"{g[0]:8.1f} us  after {g[1]:60s}  before {g[2]}")
    if listing:
        print("\none step in order (us: start offset, duration, name):")
        n = len(ev) // steps
        t0 = ev[n * 2]["ts"]
        for e in ev[n * 2:n * 3]:
            print(f"{e['ts'] - t0:9.1f} {e['dur']:8.1f}  {e['name'][:90]}")


def gaps(steps: int = 5) -> None:
    tr = bench.build_trainer(bench.NAMED["seed_persistent"], smoke=False, steps=10**6, device="cuda")
    bench._steps(tr, 30)
    timeline(lambda: bench._steps(tr, 1), "seed step", steps=steps)


def models() -> None:
    """MODELS=a,b (environment) picks some of MODELS_06; LISTING=1 prints one step's kernels in order."""
    pick = os.environ.get("MODELS", ",".join(bench.MODELS_06)).split(",")
    for label in pick:
        tr = bench.build_trainer(bench.MODELS_06[label], smoke=False, steps=10**6, device="cuda")
        table(lambda tr=tr: bench._steps(tr, 1), label, steps=5)
        timeline(lambda tr=tr: bench._steps(tr, 1), label, steps=3, top=15,
                 listing=os.environ.get("LISTING") == "1")


def ops() -> None:
    """Which operators (with their input shapes) own the device time: the MODELS steps without the
    CUDA graph (cuda_graph=off; still compiled), so that each kernel is attributed to its aten op."""
    pick = os.environ.get("MODELS", "hope_outer").split(",")
    for label in pick:
        tr = bench.build_trainer([*bench.MODELS_06[label], "cuda_graph=off"], smoke=False, steps=10**6,
                                 device="cuda")
        for _ in range(10):
            bench._steps(tr, 1)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
            for _ in range(3):
                bench._steps(tr, 1)
            torch.cuda.synchronize()
        ka = prof.key_averages(group_by_input_shape=True)
        print(f"\n=== {label} (cuda_graph=off): aten ops by device time, 3 steps", flush=True)
        print(ka.table(sort_by="cuda_time_total", row_limit=int(os.environ.get("ROWS", 40)),
                       max_name_column_width=40, max_shapes_column_width=90), flush=True)


def _forwards(model, x, y):
    """(forward, forward_alone): the model's no-grad forward over one window, and the same with
    torch.autograd.grad (HOPE's inner gradients) replaced by zeros."""
    def forward():
        with torch.no_grad():
            model(x, None, None, y) if getattr(model, "uses_targets", False) else model(x)

    def forward_alone():
        real_grad = torch.autograd.grad
        torch.autograd.grad = lambda outputs, inputs, **kw: [torch.zeros_like(t) for t in inputs]
        try:
            forward()
        finally:
            torch.autograd.grad = real_grad

    return forward, forward_alone


def phases() -> None:
    """Device time and kernels of HOPE's forward, inner gradients and outer backward (MODELS)."""
    for label in os.environ.get("MODELS", "hope").split(","):
        tr = bench.build_trainer([*bench.MODELS_06[label], "cuda_graph=off"], smoke=False, steps=10**6,
                                 device="cuda")
        B, T = tr.cfg.data.batch_size, tr.cfg.data.seq_len
        x, y = (torch.randint(0, tr.vocab_size, (B, T), device="cuda") for _ in range(2))
        forward, forward_alone = _forwards(tr.model, x, y)
        rows = [(name, profiled(fn, 5, warmup=5, cpu=False)[1:]) for name, fn in (
            ("segments' forward (inner gradients skipped)", forward_alone),
            ("forward with the inner gradients", forward),
            ("whole training step (eager, compiled parts)", functools.partial(bench._steps, tr, 1)))]
        print(f"\n=== {label} phases ({B} x {T}, device ms and kernels per call)", flush=True)
        for name, (ms, n) in rows:
            print(f"{name:48s} {ms:9.3f} ms {n:8.0f} kernels", flush=True)
        (f, nf), (fi, nfi), (st, nst) = (r[1] for r in rows)
        print(f"{'inner gradients (difference)':48s} {fi - f:9.3f} ms {nfi - nf:8.0f} kernels", flush=True)
        print(f"{'outer pass + optimizer (difference)':48s} {st - fi:9.3f} ms {nst - nfi:8.0f} kernels", flush=True)


def _window_loss(model, x, y):
    """The mean cross-entropy of one window from the zero state (targets passed where the model reads them)."""
    import torch.nn.functional as F

    kw = {"targets": y} if getattr(model, "uses_targets", False) else {}
    logits = model(x, model.init_state(x.shape[0], x.device), None, **kw)[0]
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


def flops() -> None:
    """FLOPs and operators per pass of one window (the module docstring), by torch's FLOP formulas."""
    import collections

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map
    from torch.utils.flop_counter import flop_registry

    from nlcore.config import apply_overrides, preset
    from nlcore.training.trainer import model_for

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops, self.flops = collections.Counter(), 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.ops[str(func.overloadpacket)] += 1
            if func.overloadpacket in flop_registry:
                shape = lambda t: t.shape if isinstance(t, torch.Tensor) else t  # noqa: E731
                self.flops += flop_registry[func.overloadpacket](*tree_map(shape, args),
                                                                 **tree_map(shape, kwargs or {}),
                                                                 out_val=tree_map(shape, out))
            return out

    from nlcore import repro

    device = os.environ.get("DEVICE", "cpu")
    configs = {}
    for label in os.environ.get("MODELS", "hope_outer,hope").split(","):
        torch.manual_seed(0)
        cfg = apply_overrides(preset("seed"), [*bench.parse_config(label)[1], f"device={device}"])
        model, V = model_for(cfg, 200).to(device), 200
        B, T = cfg.data.batch_size, cfg.data.seq_len
        x, y = (torch.randint(0, V, (B, T), device=device) for _ in range(2))
        loss = functools.partial(_window_loss, model, x, y)
        with torch.no_grad(), Count() as nograd:
            loss()
        with Count() as fwd:
            value = loss()
        with Count() as bwd:
            value.backward()
        print(f"\n=== {label} ({B} x {T}, eager on {device}): GFLOP and aten operators per pass", flush=True)
        for name, c in (("forward without grad", nograd), ("forward with grad", fwd), ("backward", bwd)):
            top = ", ".join(f"{k} {v}" for k, v in c.ops.most_common(6))
            print(f"{name:22s} {c.flops / 1e9:9.2f} GFLOP {sum(c.ops.values()):7d} operators  ({top})", flush=True)
        configs[label] = {"batch_size": B, "seq_len": T, "overrides": bench.parse_config(label)[1],
                          **{f"{name}_gflop": c.flops / 1e9 for name, c in
                             (("forward_nograd", nograd), ("forward", fwd), ("backward", bwd))},
                          **{f"{name}_operators": sum(c.ops.values()) for name, c in
                             (("forward_nograd", nograd), ("forward", fwd), ("backward", bwd))},
                          "step_gflop": (fwd.flops + bwd.flops) / 1e9}
    if os.environ.get("OUT"):
        env = " ".join(f"{k}={os.environ[k]}" for k in ("MODELS", "DEVICE", "OUT") if k in os.environ)
        report = {"schema": "nlcore.flops/1", "command": f"{env} {repro.command_line()}", "git": repro.git_info(),
                  "device": device, "counted": "torch.utils.flop_counter formulas of the dispatched aten "
                  "operators, eager, one window from the zero state; operators without a formula count 0",
                  "configs": configs}
        Path(os.environ["OUT"]).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    for part in sys.argv[1:] or ["floor", "seed", "memory"]:
        {"floor": floor, "seed": seed, "memory": memory, "models": models, "gaps": gaps, "ops": ops,
         "phases": phases, "flops": flops}[part]()
