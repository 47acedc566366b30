"""The Titans MLP memory alone at the 06 layer shape, compiled and CUDA-graphed, forward + backward
(diagnostics for issue 9's throughput line, not a result).

    PYTHONPATH=$PWD python3 scripts/gpu/mlp_probe.py [LABEL]

Shape of one Titans layer of results/bench/models_06.json: B 16, H 4, T 512, d 64, h_dim 128,
momentum, chunk 64. Prints the median of 5 windows of 50 graph replays. Run it with PYTHONPATH on
two checkouts to compare two revisions on one machine; PROFILE=1 adds the kernel table of 10 replays.
LOOP=autograd|op sets nlcore.ops.mlp_memory.LOOP (the default, auto, runs mlp_loop's Triton kernels on
CUDA); PREC=tf32x3, BLOCK, ROWS_PER_TILE (ROWS) and WARPS set nlcore.ops.mlp_loop's kernel settings.
"""

from __future__ import annotations

import os
import statistics
import sys

import torch
import torch.nn.functional as F
from graph_probe import graph_ms, kernel_report  # scripts/gpu, on sys.path when run as a file

from nlcore.ops import mlp_loop
from nlcore.ops import mlp_memory as mlp
from nlcore.ops.mlp_memory import mlp_memory


def main(label: str) -> None:
    mlp.LOOP = os.environ.get("LOOP", mlp.LOOP)
    mlp_loop.PRECISION = os.environ.get("PREC", mlp_loop.PRECISION)
    mlp_loop.BLOCK = int(os.environ.get("BLOCK", mlp_loop.BLOCK))
    mlp_loop.ROWS = int(os.environ.get("ROWS_PER_TILE", mlp_loop.ROWS))
    mlp_loop.WARPS = int(os.environ.get("WARPS", mlp_loop.WARPS))
    if os.environ.get("TAIL"):  # "units warps" of bwd_tail
        mlp_loop.TAIL = tuple(int(v) for v in os.environ["TAIL"].split())
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    B, H, T, d, hd = 16, 4, 512, 64, 128
    r = lambda *s: torch.randn(*s, generator=g, device=dev)  # noqa: E731
    gate = lambda lo, hi: lo + (hi - lo) * torch.rand(B, H, T, generator=g, device=dev)  # noqa: E731
    x = dict(q=F.normalize(r(B, H, T, d), dim=-1), k=F.normalize(r(B, H, T, d), dim=-1),
             v=F.normalize(r(B, H, T, d), dim=-1), eta=gate(0.0, 0.01), alpha=gate(0.95, 1.0), beta=gate(0.0, 0.9),
             W1=r(B, H, hd, d) / d**0.5, W2=0.02 * r(B, H, d, hd), S1=torch.zeros(B, H, hd, d, device=dev),
             S2=torch.zeros(B, H, d, hd, device=dev))
    leaves = {n: t.requires_grad_(True) for n, t in x.items()}

    def loss(**kw):
        y, (W1, W2), (S1, S2) = mlp_memory(**kw, chunk=64)
        return y.square().mean() + sum(t.square().mean() for t in (W1, W2, S1, S2))

    f = torch.compile(loss)

    def step():
        f(**leaves).backward()

    ms, graph = graph_ms(step)
    if os.environ.get("PROFILE"):
        kernel_report(graph, label, rows=int(os.environ.get("ROWS", 30)))
    print(f"MLP_PROBE {label}: {statistics.median(ms):.3f} ms per layer forward + backward "
          f"(windows {', '.join(f'{v:.3f}' for v in ms)})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
