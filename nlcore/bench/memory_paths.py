"""Chunk-parallel vs token-by-token speed of the memories (forward + backward, one window).

``python -m nlcore.bench.memory_paths [--window 2048] [--out results/bench/memory_paths.json]`` times,
for each memory (the linear delta-rule memory, the Titans MLP memory, and a whole HOPE
self-modifying memory layer), both computation paths on the same random inputs, after warm-up,
device-synchronised, median over repeats, and reports the speed-up token / chunk. The two
paths compute the same function (tests/ops/, tests/models/test_memory_layers.py).

Eager timing of small kernels measures the host's launch rate as much as the GPU. ``--graph``
(CUDA only) also times each path replayed from a CUDA graph, as the training step runs
(nlcore/accel/cuda_graph.py): the columns ``*_graph_s`` and ``speedup_graph``. ``--kinds`` picks memories.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nlcore.accel.cuda_graph import capture


def _inputs(B: int, H: int, T: int, d: int, device, g: torch.Generator) -> dict:
    r = lambda *s: torch.randn(*s, generator=g, device=device)  # noqa: E731
    gate = lambda lo, hi: (lo + (hi - lo) * torch.rand(B, H, T, generator=g, device=device))  # noqa: E731
    return dict(q=F.normalize(r(B, H, T, d), dim=-1), k=F.normalize(r(B, H, T, d), dim=-1), v=r(B, H, T, d),
                eta=gate(0.05, 0.5), alpha=gate(0.95, 1.0), beta=gate(0.0, 0.9))


def _case(kind: str, impl: str, B: int, H: int, T: int, d: int, chunk: int, device):
    from nlcore.ops.linear_memory import linear_memory
    from nlcore.ops.mlp_memory import mlp_memory

    g = torch.Generator(device=device).manual_seed(0)
    x = _inputs(B, H, T, d, device, g)
    if kind == "hope_layer":
        from nlcore.models.memory_layers import SelfModifyingMemory

        layer = SelfModifyingMemory(H * d, H, chunk=chunk, impl=impl).to(device)
        u = torch.randn(B, T, H * d, generator=g, device=device, requires_grad=True)
        st = {k: torch.zeros(B, *s, device=device) for k, s in layer.state_shapes().items()}
        return lambda: layer(u, st, None)[0].square().mean().backward()
    leaves = {k: v.requires_grad_(True) for k, v in x.items()}
    if kind == "linear":
        M0 = torch.zeros(B, H, d, d, device=device, requires_grad=True)
        return lambda: linear_memory(**leaves, M0=M0, chunk=chunk, impl=impl)[0].square().mean().backward()
    W1 = (0.1 * torch.randn(B, H, 2 * d, d, generator=g, device=device)).requires_grad_(True)
    W2 = (0.1 * torch.randn(B, H, d, 2 * d, generator=g, device=device)).requires_grad_(True)
    return lambda: mlp_memory(**leaves, W1=W1, W2=W2, chunk=chunk, impl=impl)[0].square().mean().backward()


KINDS = ("linear", "mlp", "hope_layer")


def _time(fn, device, repeats: int) -> list[float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return out


def _ms(t: dict, impl: str) -> str:
    return f"{impl} {t[impl] * 1e3:9.1f} ms"


def run(window: int = 2048, B: int = 8, H: int = 4, d: int = 64, chunk: int = 64, repeats: int = 5,
        device: str | None = None, kinds=KINDS, graph: bool = False) -> dict:
    from nlcore import repro

    if bad := [k for k in kinds if k not in KINDS]:
        raise ValueError(f"kinds: unknown {bad}; choose from {KINDS}")
    dev = repro.pick_device(device or "auto")
    if graph and dev.type != "cuda":
        raise ValueError(f"graph=True (--graph) times CUDA graphs and needs a CUDA device, got {dev.type!r}")
    rows = []
    for kind in kinds:
        t, tg = {}, {}
        for impl in ("token", "chunk"):
            fn = _case(kind, impl, B, H, window, d, chunk, dev)
            t[impl] = _time(fn, dev, repeats)
            if graph:
                g = capture(fn, dev)  # the captured backward accumulates into the leaves' .grad
                tg[impl] = _time(g.replay, dev, repeats)
                del g, fn
                torch.cuda.empty_cache()
        med = {impl: statistics.median(v) for impl, v in t.items()}
        row = {"memory": kind, "window": window, "batch": B, "heads": H, "head_dim": d, "chunk": chunk,
               "token_s": med["token"], "chunk_s": med["chunk"], "speedup": med["token"] / med["chunk"],
               "token_all_s": t["token"], "chunk_all_s": t["chunk"]}
        line = f"{kind:10s} T={window}: eager {_ms(med, 'token')} {_ms(med, 'chunk')} speed-up {row['speedup']:6.1f}x"
        if graph:
            mg = {impl: statistics.median(v) for impl, v in tg.items()}
            row.update(token_graph_s=mg["token"], chunk_graph_s=mg["chunk"], speedup_graph=mg["token"] / mg["chunk"],
                       token_graph_all_s=tg["token"], chunk_graph_all_s=tg["chunk"])
            line += f" | graph {_ms(mg, 'token')} {_ms(mg, 'chunk')} speed-up {row['speedup_graph']:6.1f}x"
        rows.append(row)
        print(line, flush=True)
    what = "forward+backward of one window, median seconds" + (" (eager; *_graph_s: CUDA-graph replay)"
                                                                 if graph else "")
    return {"what": what, "command": repro.command_line(), "environment": repro.capture_environment(dev),
            "git": repro.git_info(), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--window", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default=None)
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="memories to time")
    p.add_argument("--graph", action="store_true", help="also time CUDA-graph replays (CUDA only)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    try:
        report = run(a.window, a.batch, chunk=a.chunk, repeats=a.repeats, device=a.device, kinds=a.kinds,
                     graph=a.graph)
    except ValueError as e:
        p.error(str(e))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
