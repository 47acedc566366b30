"""How does the backward signal through the Titans MLP memory's carried state grow with the number of
chunk-to-chunk writes per window? A CPU probe of 06's `titans_cap` model (a lead, not a result).

    NLCORE_DATA=... OMP_NUM_THREADS=1 PYTHONPATH=$PWD python scripts/probe/titans_state_jacobian.py \
        --out DIR [--ckpt NAME=PATH ...] [--chunks 16 32 64 128] [--trunc 0 1 4]

The model is 06's size (d_model 256, 4 layers, 4 heads, d_ff 768) with `titans_cap`'s memory
(retention toward the initial weights, normalised writes, write-step ceiling 0.5, state cap 0.5),
at random init (seed 0) and at every checkpoint given (`--ckpt`, a `python -m nlcore train` run's
checkpoint.pt). `model.mem_chunk` only sets how the memory splits a window (no parameter depends
on it), so one set of weights is measured at every chunk. Each measurement runs on `--rows` real
WikiText-2 valid windows of `--seq-len` characters, after `--warm` preceding windows read without
gradient so that the memory's state is carried in as in training.

Per (weights, chunk, truncation):
- `grad_norm`: the norm of the loss's gradient over all parameters, which here all belong to the
  fast CMS level: the number training clips (`grad_norm` in metrics.jsonl, before clipping).
- `state_grad[layer][c]`: |dL/dX_c|, X_c = (θ − θ_a, S) the memory's carried state (weights'
  distance from their anchor and momentum, W1 and W2 parts together) after chunk c = 1..N−1, by
  retain_grad on the loop's states. If the backward pass through the chain of writes multiplies
  Jacobians whose norm exceeds 1, |dL/dX_c| grows toward the window's start (small c) and the
  more so the more chunks a window has.
- at truncation 0 only (the forward map does not depend on truncation): the spectral norm of the
  whole window's state map X_0 -> X_N (`sigma_window`), and of every single chunk's map
  X_{c−1} -> X_c (`sigma_chunk`), each per (row, head), the map being block-diagonal over them,
  estimated by `--iters` power iterations on JᵀJ with torch.func.jvp / vjp around the forward
  trajectory, with the layer's inputs (keys, values, gates) held fixed. This isolates the state
  path: how a perturbation of the carried state propagates through one layer's own writes.
  Power iteration gives a lower bound that is tight once it has converged; the JSON keeps the
  last two iterates' estimates to show how far it is.

Truncation k > 0 is the candidate fix, applied only in this script: the loop over chunks
(`nlcore.ops.mlp_memory.loop.forward_torch`, the path every normalised or capped MLP memory runs)
is replaced by a copy that detaches the carried state at the start of every chunk n > 0 with
n % k == 0 before its write, so the gradient crosses at most k writes (truncated backprop through
the memory state, in blocks of k chunks; k = 1: every read's gradient reaches the previous chunk's
write and stops there). The forward values are those of the untruncated loop (asserted: the
loss is the same to rounding).

The whole probe runs in float64 (`--dtype`), cheap at batch 1 or 2 on a CPU, so the norms are not
rounding artefacts; 06's runs train in bf16/float32.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import time
from pathlib import Path

import torch
from torch.func import jvp, vjp

import nlcore.ops.mlp_memory.chunk as mlp_chunk
from nlcore.accel.precision import fp32_cross_entropy
from nlcore.config import apply_overrides, preset
from nlcore.models.memory_layers import TitansMemory
from nlcore.ops.mlp_memory.loop import _mix, _outer, add_anchor
from nlcore.ops.mlp_memory.naive import cap_factor, factors
from nlcore.training.trainer import load_data, model_for

LN2 = math.log(2.0)
SIZE = ["model.kind=titans", "model.memory=mlp", "model.d_model=256", "model.d_ff=768", "model.n_layers=4",
        "model.n_heads=4", "model.mem_retention=init", "model.mem_normalize=true", "model.mem_step_max=0.5",
        "model.mem_state_max=0.5", "cms.levels.fast.lr=0.002", "seed=0", "device=cpu"]


class Probe:
    """What the replaced loop does: its truncation, and what it records of the current forward pass."""

    def __init__(self) -> None:
        self.trunc = 0  # 0: full backprop through the state; k: detach it at chunks n % k == 0
        self.record = False
        self.calls: list[dict] = []  # one per memory layer and forward: its states and chunk inputs


PROBE = Probe()


def step(X1, X2, kn, kvn, un, mn, a1, a2, normalize, bound):
    """One chunk's write (as in `forward_torch`): the start state -> the end state."""
    e, a, delta = factors(add_anchor(X1[:, :, 0], a1), add_anchor(X2[:, :, 0], a2), kn, kvn, normalize)
    Y1 = _mix(mn, X1) + _outer(delta, un, kn)
    Y2 = _mix(mn, X2) + _outer(e, un, a)
    if bound is not None:
        f = cap_factor(Y1[:, :, 0], Y2[:, :, 0], bound).unsqueeze(2)
        Y1, Y2 = f * Y1, f * Y2
    return (e, a, delta), Y1, Y2


def probe_forward(X1, X2, k, kv, u, mix, a1, a2, normalize: bool = False, bound=None, grad_chunks: int = 0):
    """`forward_torch` with the probe's truncation (or the model's own, `grad_chunks`) and records;
    the same forward values."""
    S1, S2, out = [X1], [X2], []
    rec = {"X0": (X1.detach(), X2.detach()), "states": [], "inputs": [], "a": (a1, a2),
           "normalize": normalize, "bound": bound} if PROBE.record else None
    for n, (kn, kvn, un, mn) in enumerate(zip(*(x.unbind(2) for x in (k, kv, u, mix)))):
        trunc = PROBE.trunc or grad_chunks
        if trunc > 0 and n > 0 and n % trunc == 0:
            X1, X2 = X1.detach(), X2.detach()  # the gradient stops here; the stored start S1s[n] keeps its own
        fac, X1, X2 = step(X1, X2, kn, kvn, un, mn, a1, a2, normalize, bound)
        out.append(fac)
        if rec is not None:
            if X1.requires_grad:
                X1.retain_grad()
                X2.retain_grad()
            rec["states"].append((X1, X2))
            rec["inputs"].append(tuple(x.detach() for x in (kn, kvn, un, mn)))
        S1.append(X1)
        S2.append(X2)
    if rec is not None:
        PROBE.calls.append(rec)
    e, a, delta = (torch.stack(x, 2) for x in zip(*out))
    return torch.stack(S1, 2), torch.stack(S2, 2), e, a, delta


mlp_chunk.forward_torch = probe_forward  # chunk_path runs it for every normalised or capped memory


def blocks(x1, x2):
    """Per (row, head) squared norm of a state pair: (B, H)."""
    return x1.square().sum((2, 3, 4)) + x2.square().sum((2, 3, 4))


def power_sigma(f, X, iters: int, gen: torch.Generator) -> tuple[list[float], list[float]]:
    """Per-(row, head) spectral norm of the Jacobian of f: (X1, X2) -> (Y1, Y2) at X, by power
    iteration on JᵀJ, the blocks normalised separately (f is block-diagonal over rows and heads).
    Returns the last and the second-to-last estimates, flattened over (B, H)."""
    v = tuple(torch.randn(x.shape, generator=gen, dtype=x.dtype) for x in X)
    est = prev = None
    for _ in range(iters):
        nrm = blocks(*v).sqrt()[..., None, None, None]
        v = tuple(x / nrm for x in v)
        _, jv = jvp(f, X, v)
        _, back = vjp(f, *X)
        w = back(jv)
        prev, est = est, blocks(*jv).sqrt()  # |J v| per block, |v| = 1: a lower bound on the spectral norm
        v = w
    return est.flatten().tolist(), (prev if prev is not None else est).flatten().tolist()


def window_map(rec, lo: int, hi: int):
    """X_lo -> X_hi through the layer's chunks lo..hi−1 with its recorded inputs."""
    a1, a2 = rec["a"]
    a1, a2 = (None if a is None else a.detach() for a in (a1, a2))
    bound = rec["bound"]

    def f(X1, X2):
        for kn, kvn, un, mn in rec["inputs"][lo:hi]:
            _, X1, X2 = step(X1, X2, kn, kvn, un, mn, a1, a2, rec["normalize"], bound)
        return X1, X2
    return f


def jacobians(calls: list[dict], iters: int, seed: int) -> list[dict]:
    """Per layer: the window's and every chunk's state-map spectral norm (max over rows and heads)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for rec in calls:
        N = len(rec["inputs"])
        starts = [rec["X0"]] + [tuple(x.detach() for x in s) for s in rec["states"][:-1]]
        win, win_prev = power_sigma(window_map(rec, 0, N), rec["X0"], iters, gen)
        per = [power_sigma(window_map(rec, c, c + 1), starts[c], iters, gen)[0] for c in range(N)]
        out.append({"sigma_window": max(win), "sigma_window_prev_iter": max(win_prev),
                    "sigma_chunk": [max(s) for s in per],
                    "log10_prod_sigma_chunk": sum(math.log10(max(max(s), 1e-300)) for s in per)})
    return out


def windows(ids: torch.Tensor, rows: int, T: int, warm: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`rows` rows of (warm + 1) consecutive windows from valid, rows 100 windows apart: x, y (rows, (warm+1) T)."""
    L = (warm + 1) * T
    starts = [offset + r * 100 * T for r in range(rows)]
    x = torch.stack([ids[s:s + L] for s in starts])
    y = torch.stack([ids[s + 1:s + L + 1] for s in starts])
    return x, y


def measure(model, x, y, T: int, warm: int, chunk: int, trunc: int, jac_iters: int) -> dict:
    """One forward/backward on the last window of x after `warm` windows without gradient."""
    for m in model.modules():
        if isinstance(m, TitansMemory):
            m.chunk = chunk
    model.zero_grad(set_to_none=True)
    state = None
    with torch.no_grad():
        PROBE.record, PROBE.trunc = False, 0
        for w in range(warm):
            _, state = model(x[:, w * T:(w + 1) * T], state)
    PROBE.record, PROBE.trunc, PROBE.calls = True, trunc, []
    t0 = time.perf_counter()
    logits, _ = model(x[:, warm * T:], state)
    loss = fp32_cross_entropy(logits, y[:, warm * T:])
    loss.backward()
    PROBE.record, PROBE.trunc = False, 0
    params = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
    gn = torch.sqrt(sum(p.grad.double().square().sum() for _, p in params)).item()
    gmem = torch.sqrt(sum(p.grad.double().square().sum() for n, p in params if n.startswith("mems."))).item()
    calls = PROBE.calls
    state_grad = []
    for rec in calls:  # |dL/dX_c|, c = 1..N−1 (the last state feeds no read of this window)
        row = []
        for X1, X2 in rec["states"][:-1]:
            g = [t.grad for t in (X1, X2)]
            row.append(0.0 if g[0] is None else float(blocks(*g).sum().sqrt()))
        state_grad.append(row)
    res = {"chunk": chunk, "trunc": trunc, "n_chunks": len(calls[0]["inputs"]) if calls else 0,
           "loss_bpc": loss.item() / LN2, "grad_norm": gn, "grad_norm_memory_params": gmem,
           "state_grad": state_grad,
           "state_norm": [[float(blocks(*(t.detach() for t in s)).sqrt().max()) for s in rec["states"]]
                          for rec in calls],
           "fwd_bwd_s": time.perf_counter() - t0}
    if jac_iters > 0:
        res["jacobian"] = jacobians(calls, jac_iters, seed=chunk)
    PROBE.calls = []
    return res


def summary_line(name: str, r: dict) -> str:
    sg = [max(row) if row else 0.0 for row in r["state_grad"]]
    first = [row[0] if row else 0.0 for row in r["state_grad"]]
    last = [row[-1] if row else 0.0 for row in r["state_grad"]]
    s = (f"{name:10s} chunk {r['chunk']:4d} ({r['n_chunks']:2d} writes) trunc {r['trunc']}: bpc {r['loss_bpc']:.4f}, "
         f"grad {r['grad_norm']:.4g} (memory params {r['grad_norm_memory_params']:.4g}), "
         f"max_c |dL/dX_c| per layer {[f'{v:.3g}' for v in sg]}, first/last {[f'{a:.3g}/{b:.3g}' for a, b in zip(first, last)]}")
    if "jacobian" in r:
        win = [f"{j['sigma_window']:.3g}" for j in r["jacobian"]]
        prod = [f"{j['log10_prod_sigma_chunk']:.2f}" for j in r["jacobian"]]
        s += f"; sigma_window per layer {win}, log10 prod sigma_chunk {prod}"
    return s + f" [{r['fwd_bwd_s']:.1f} s]"


def table(results: list[dict]) -> list[str]:
    """A markdown table of every measurement, each column the largest over the four layers:
    |dL/dX_1| / |dL/dX_{N-1}| (the state gradient's growth from the window's last read state back to
    its first), max_c |dL/dX_c|, the window's state-map spectral norm and the log10 product and the
    median of the chunks' ones."""
    out = ["| weights | chunk | writes | trunc | bpc | grad norm | memory params' grad | "
           "growth dL/dX_1 / dL/dX_N-1 | max dL/dX_c | sigma window | log10 prod sigma chunk | median sigma chunk |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        growth = max(row[0] / row[-1] if row and row[-1] > 0 else float("nan") for row in r["state_grad"])
        top = max(max(row) if row else 0.0 for row in r["state_grad"])
        cols = [r["weights"], r["chunk"], r["n_chunks"], r["trunc"], f"{r['loss_bpc']:.4f}", f"{r['grad_norm']:.3g}",
                f"{r['grad_norm_memory_params']:.3g}", f"{growth:.3g}", f"{top:.3g}"]
        if "jacobian" in r:
            j = r["jacobian"]
            cols += [f"{max(x['sigma_window'] for x in j):.3g}", f"{max(x['log10_prod_sigma_chunk'] for x in j):.2f}",
                     f"{max(sorted(x['sigma_chunk'])[len(x['sigma_chunk']) // 2] for x in j):.3g}"]
        else:
            cols += ["", "", ""]
        out.append("| " + " | ".join(str(c) for c in cols) + " |")
    return out


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for probe.json and probe.log")
    ap.add_argument("--ckpt", nargs="*", default=[], help="NAME=PATH of trained checkpoints to measure besides init")
    ap.add_argument("--chunks", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--trunc", type=int, nargs="+", default=[0, 1, 4], help="0: full backprop; k: truncation (see above)")
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--warm", type=int, default=1, help="windows read without gradient before the measured one")
    ap.add_argument("--offset", type=int, default=0, help="first character of row 0 in valid")
    ap.add_argument("--iters", type=int, default=12, help="power iterations per spectral norm (0: none)")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "probe.log", "w")

    def say(s: str) -> None:
        print(s, flush=True)
        log.write(s + "\n")
        log.flush()

    cfg = apply_overrides(preset("seed"), [*SIZE, f"data.seq_len={args.seq_len}"])
    corpus = load_data(cfg)
    x, y = windows(corpus.ids["valid"], args.rows, args.seq_len, args.warm, args.offset)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"code": rev, "torch": torch.__version__, "cpu": cpu_name(),
            "threads": torch.get_num_threads(), "dtype": args.dtype, "args": vars(args), "size": SIZE,
            "windows": {"split": "valid", "rows": args.rows, "seq_len": args.seq_len, "warm": args.warm,
                        "starts": [args.offset + r * 100 * args.seq_len for r in range(args.rows)]}}
    say(json.dumps(meta))
    torch.manual_seed(0)
    model = model_for(cfg, corpus.tokenizer.vocab_size)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    sources = [("init", None)] + [tuple(s.split("=", 1)) for s in args.ckpt]
    results = []
    for name, path in sources:
        sd = init if path is None else torch.load(path, map_location="cpu", weights_only=False, mmap=True)["model"]
        model.load_state_dict(sd)
        model.to(dtype)
        for chunk in args.chunks:
            base = None
            for trunc in args.trunc:
                r = measure(model, x, y, args.seq_len, args.warm, chunk, trunc, args.iters if trunc == 0 else 0)
                r["weights"] = name
                if base is None:
                    base = r["loss_bpc"]
                r["loss_diff_vs_first_trunc"] = r["loss_bpc"] - base  # the forward values do not change
                assert abs(r["loss_diff_vs_first_trunc"]) < 1e-6, r["loss_diff_vs_first_trunc"]
                results.append(r)
                say(summary_line(name, r))
                (out / "probe.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    say("")
    for line in table(results):
        say(line)
    log.close()


if __name__ == "__main__":
    main()
