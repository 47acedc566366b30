"""HOPE's chunk loop (`nlcore.ops.hope_chunk.hope_chunks`) alone at the 06 layer shape, compiled
and CUDA-graphed, forward + backward (diagnostics for issue 9's throughput line, not a result).

    PYTHONPATH=$PWD python3 scripts/gpu/hope_probe.py [LABEL]

Shape of one HOPE layer of results/bench/models_06.json: B 16, H 4, T 512, dh 64, chunk 64,
momentum. Prints the median of 5 windows of 50 graph replays, and the forward alone. PROFILE=1 adds
the kernel table of 10 replays; LISTING=1 one replay's kernels in order (start offset, duration);
MOMENTUM=0 runs the loop without momentum (beta and S None); MODE sets torch.compile's mode;
FUSED=0/1 sets `hope_chunk.FUSED` (0: hope_chunks' own loop; 1 or unset: the fused op's Triton
kernels); BR (state rows per program), WARPS ("keys,state,tokens"), BT (tokens per program), STAGES and PREC set `hope_loop`'s kernel settings.
"""

from __future__ import annotations

import os
import statistics
import sys

import torch
import torch.nn.functional as F
from graph_probe import graph_ms, kernel_report  # scripts/gpu, on sys.path when run as a file

from nlcore.ops import hope_chunk, hope_loop
from nlcore.ops.hope_chunk import hope_chunks


def inputs(B=16, H=4, T=512, dh=64, device="cuda", seed=0) -> dict:
    g = torch.Generator(device=device).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=device)  # noqa: E731
    gate = lambda lo, hi: lo + (hi - lo) * torch.rand(B, H, T, generator=g, device=device)  # noqa: E731
    init = torch.cat([torch.zeros(H, dh, dh, device=device), r(H, 2 * dh, dh) / dh**0.5], 1)
    return dict(x=F.silu(r(B, H, T, dh)), q=F.normalize(r(B, H, T, dh), dim=-1), eta=gate(0.2, 0.8),
                alpha=gate(0.95, 1.0), beta=gate(0.2, 0.8), init=init, D=torch.zeros(B, H, 3 * dh, dh, device=device),
                S=torch.zeros(B, H, 3 * dh, dh, device=device))


def settings() -> None:
    """The environment's kernel settings (see the docstring)."""
    env = os.environ
    if env.get("FUSED"):
        hope_chunk.FUSED = env["FUSED"] == "1"
    if env.get("BR"):
        hope_loop.ROWS = int(env["BR"])
    if env.get("WARPS"):
        hope_loop.WARPS = tuple(int(w) for w in env["WARPS"].split(","))
    if env.get("STAGES"):
        hope_loop.STAGES = int(env["STAGES"])
    if env.get("BT"):
        hope_loop.TOKENS = int(env["BT"])
    if env.get("PREC"):
        hope_loop.PRECISION = env["PREC"]


def main(label: str) -> None:
    settings()
    x = inputs()
    if os.environ.get("MOMENTUM") == "0":
        x.update(beta=None, S=None)
    leaves = {n: (t.requires_grad_(True) if t is not None else None) for n, t in x.items()}

    def loss(**kw):
        y, D, S = hope_chunks(**kw, chunk=64)
        return y.square().mean() + D.square().mean() + (S.square().mean() if S is not None else 0)

    f = torch.compile(loss, mode=os.environ.get("MODE") or None)
    ms, graph = graph_ms(lambda: f(**leaves).backward())
    with torch.no_grad():
        fwd, _ = graph_ms(lambda: f(**leaves))
    if os.environ.get("PROFILE") or os.environ.get("LISTING"):
        kernel_report(graph, label, rows=int(os.environ.get("ROWS", 30)), listing=bool(os.environ.get("LISTING")))
    print(f"HOPE_PROBE {label}: {statistics.median(ms):.3f} ms per layer forward + backward, forward alone "
          f"{statistics.median(fwd):.3f} ms (windows {', '.join(f'{v:.3f}' for v in ms)})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
