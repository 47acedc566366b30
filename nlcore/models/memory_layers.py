r"""Sequence-mixing layers built on the memories of `nlcore.ops`, written inside the forward pass.

Both layers read a pre-normed input u (B, T, d), split it into H heads of width dh = d / H, and
keep one memory per (row, head) as recurrent state, so every row of a batch has its own memory
and it is carried across windows like an LSTM state (`nlcore.state`). The memories' initial
states are parameters (meta-learned by the outer optimizer); the carried state is the per-row
difference from them, so the zero state is the meta-learned memory.

**Titans memory** (`TitansMemory`, Behrouz et al. 2025, Eqs. 11-15), per head:

    q_t, k_t, v_t = SiLU(W_{q,k,v} u_t),   q_t, k_t L2-normalised
    eta_t, alpha_t, beta_t = sigmoid(W_g u_t + b)        (step size, retention, momentum decay)
    S_t = beta_t S_{t-1} - eta_t grad l(M; k_t, v_t),   M_t = alpha_t M_{t-1} + S_t,
    l(M; k, v) = 1/2 ||M(k) - v||^2,   y_t = M_t(q_t),   out_t = W_o (y_t * SiLU(W_z u_t))

with M a linear map (the gradient taken at M_{t-1}: the gated delta rule with momentum) or a
2-layer residual MLP M(x) = x + W2 SiLU(W1 x) (gradients at the chunk-start state, Titans'
mini-batch form). Retention pulls M toward zero (Titans' Eq. 13 read literally), or with
`retention="init"` toward the memory's meta-learned initial state. For the MLP
memory the values are L2-normalised and eta_t is at most `step_max` (by default 1/C, so the C
summed chunk-start gradients make a mean-sized step): with raw values and a sum of C full steps
the memory's writes grow with C and training at the 06 size diverges early. `state_max` > 0 caps,
at every chunk's end, the memory's distance from its anchor at that multiple of its initial
weights' norm (per head; the momenta scaled by the same factor): the carried state cannot compound
from one chunk to the next past it, whatever the outer parameters do to the write step.
`grad_chunks` k > 0 truncates the backward pass through the MLP memory's carried state: every k-th
chunk's write starts from the state detached, so a gradient crosses at most k writes, while each
read still reaches the write before it; the forward values do not change. Where each chunk's map
of the state expands, the backward pass multiplies one Jacobian per write, so a bound on their
number bounds its growth (docs/hope_titans.md).

**Self-modifying memory** (`SelfModifyingMemory`, the HOPE block's first half; Nested Learning
Eqs. 83-89, with these choices where the paper leaves them open: fixed query, scalar gates from
linear readouts, linear memories, main memory trained on v_t, the projection memories on their
own self-generated targets). Per head, with x_t = W_x u_t and chunks of C tokens whose keys and
values come from the memories' states at the chunk start (index c):

    k_t = normalise(M_{k,c} x_t),   v_t = normalise(M_{v,c} x_t),   q_t = normalise(W_q u_t)
    targets:  v_t for M_mem,   normalise(M_{k,c} v_t) for M_k,   normalise(M_{v,c} v_t) for M_v
    every M in {M_mem, M_k, M_v}:  the DGD / delta-rule write with key k_t and its target,
    retention alpha_t toward its meta-learned initial state and optional momentum
    y_t = M_{mem,t} q_t,   out_t = W_o (y_t * SiLU(W_z u_t))

Values and self-generated targets are L2-normalised, a stability choice beyond the paper: with
raw targets M v the projection memories feed their own growth back (a target grows with M, so M
grows) and diverge. With unit keys, unit targets and eta in (0, 1) each write moves M k toward a
unit vector, so the memories stay bounded.
The delta-rule memory is exact per token, so the chunk size C changes the computation only
through where keys and values are generated (C is semantic here, as in the paper's Eqs. 90-93).
Document starts inside a window (`Resets`) split the window: the rows starting a document get
the zero state there, and every row's chunk grid restarts at the cut.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from nlcore.models.base import Resets, State
from nlcore.ops.hope_memory import hope_chunks
from nlcore.ops.linear_memory import linear_memory
from nlcore.ops.mlp_memory import mlp_memory


def heads(x: torch.Tensor, H: int) -> torch.Tensor:
    """(B, T, H*dh) -> (B, H, T, dh)."""
    B, T, d = x.shape
    return x.view(B, T, H, d // H).transpose(1, 2)


def unheads(y: torch.Tensor) -> torch.Tensor:
    """(B, H, T, dh) -> (B, T, H*dh)."""
    B, H, T, dh = y.shape
    return y.transpose(1, 2).reshape(B, T, H * dh)


def bounds(T: int, resets: Resets | None, grid: int | None = None) -> list[int]:
    """Sorted cut points [0, ..., T]: document starts and (optionally) every `grid` tokens."""
    cuts = set(resets.cuts) if resets is not None else set()
    if grid is not None:
        cuts.update(range(grid, T, grid))
    return [0, *sorted(c for c in cuts if 0 < c < T), T]


def zero_rows(state: State, keep: torch.Tensor) -> State:
    """Zero the rows where keep (B,) is False (a document starts there)."""
    return {k: v * keep.to(v.dtype).view(-1, *([1] * (v.dim() - 1))) for k, v in state.items()}


def work_dtype(u: torch.Tensor) -> torch.dtype:
    """The memories run in float32 (float64 for a float64 model), also under bf16 autocast."""
    return torch.promote_types(u.dtype, torch.float32)


def keep_at(resets: Resets | None, t: int) -> torch.Tensor | None:
    return None if resets is None else ~resets.mask[:, t]


class _Gated(nn.Module):
    """Shared parts: gates, output gate and projection, per-head bookkeeping."""

    def __init__(self, d: int, H: int, n_gates: int, gate_bias: tuple[float, ...]) -> None:
        super().__init__()
        if d % H:
            raise ValueError(f"n_heads: {H} must divide d_model={d}")
        self.d, self.H, self.dh = d, H, d // H
        self.gates = nn.Linear(d, n_gates * H)
        nn.init.normal_(self.gates.weight, std=0.02)
        with torch.no_grad():
            self.gates.bias.copy_(torch.tensor(gate_bias).repeat_interleave(H))
        self.gate_z = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, d, bias=False)

    def gate_values(self, u: torch.Tensor) -> list[torch.Tensor]:
        """Sigmoid gates, each (B, H, T), in the working dtype."""
        g = torch.sigmoid(self.gates(u).to(work_dtype(u)))  # (B, T, n*H)
        return [x.transpose(1, 2) for x in g.split(self.H, dim=-1)]

    def finish(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.out((unheads(y).to(u.dtype)) * F.silu(self.gate_z(u)))  # (B, T, d)


class TitansMemory(_Gated):
    """Titans neural memory as a layer (see the module docstring)."""

    def __init__(self, d: int, H: int, *, memory: str = "mlp", hidden_mult: int = 2, chunk: int = 64,
                 impl: str = "chunk", momentum: bool = True, alpha0: float = 0.982,
                 retention: str = "zero", step_max: float = 0.0, normalize: bool = False,
                 state_max: float = 0.0, grad_chunks: int = 0) -> None:
        super().__init__(d, H, 3, (0.0, math.log(alpha0 / (1 - alpha0)), 0.0))  # eta 0.5, alpha0, beta 0.5
        if retention not in ("zero", "init"):
            raise ValueError(f"model.mem_retention: must be 'zero' or 'init', got {retention!r}")
        self.memory, self.chunk, self.impl, self.momentum = memory, chunk, impl, momentum
        self.to_init = retention == "init"
        self.step_max = step_max or 1.0 / chunk  # the MLP memory's eta_t ceiling
        self.normalize = normalize  # the MLP memory's gradients divided by their curvature bound
        self.state_max = state_max  # the MLP memory's distance from its anchor, in initial-weight norms (0: free)
        if grad_chunks and memory != "mlp":
            raise ValueError(f"model.mem_grad_chunks: applies to the MLP memory only, got memory={memory!r}")
        self.grad_chunks = grad_chunks  # the MLP memory's gradient crosses at most this many writes (0: all)
        self.writes = True  # False: write step 0 and retention 1, the memory keeps its weights (`writes_off`)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        dh = self.dh
        if memory == "linear":
            self.M_init = nn.Parameter(torch.zeros(H, dh, dh))
        else:
            hid = hidden_mult * dh
            self.W1_init = nn.Parameter(torch.randn(H, hid, dh) / math.sqrt(dh))
            self.W2_init = nn.Parameter(torch.randn(H, dh, hid) * 0.02)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        H, dh = self.H, self.dh
        if self.memory == "linear":
            shapes = {"M": (H, dh, dh)}
        else:
            hid = self.W1_init.shape[1]
            shapes = {"W1": (H, hid, dh), "W2": (H, dh, hid)}
        if self.momentum:
            shapes.update({f"S{k}": v for k, v in list(shapes.items())})
        return shapes

    def _run(self, q, k, v, eta, alpha, beta, st: State) -> tuple[torch.Tensor, State]:
        if self.memory == "linear":
            if self.to_init:  # on D = M - M_init with target v - M_init k: the same gradient
                M_init = self.M_init.to(q.dtype)
                y, D, S = linear_memory(q, k, v - k @ M_init.transpose(-1, -2), eta, alpha, beta, st["M"],
                                        st.get("SM"), chunk=self.chunk, impl=self.impl)
                y, new = y + q @ M_init.transpose(-1, -2), {"M": D}
            else:
                y, M, S = linear_memory(q, k, v, eta, alpha, beta, self.M_init + st["M"], st.get("SM"),
                                        chunk=self.chunk, impl=self.impl)
                new = {"M": M - self.M_init}
            if self.momentum:
                new["SM"] = S
            return y, new
        anchor = (self.W1_init, self.W2_init) if self.to_init else None
        bound = None
        if self.state_max > 0:  # per head: a multiple of the initial weights' norm, a constant of the write
            bound = self.state_max * torch.sqrt(self.W1_init.detach().square().sum((-1, -2))
                                                + self.W2_init.detach().square().sum((-1, -2)))  # (H,)
        y, (W1, W2), S = mlp_memory(q, k, v, eta, alpha, beta, self.W1_init + st["W1"], self.W2_init + st["W2"],
                                    st.get("SW1"), st.get("SW2"), chunk=self.chunk, impl=self.impl, anchor=anchor,
                                    normalize=self.normalize, bound=bound, grad_chunks=self.grad_chunks)
        new = {"W1": W1 - self.W1_init, "W2": W2 - self.W2_init}
        if self.momentum:
            new.update(SW1=S[0], SW2=S[1])
        return y, new

    def forward(self, u: torch.Tensor, st: State, resets: Resets | None) -> tuple[torch.Tensor, State]:
        wd = work_dtype(u)
        q, k, v = (heads(F.silu(z), self.H).to(wd) for z in self.qkv(u).chunk(3, dim=-1))  # (B, H, T, dh)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        eta, alpha, beta = self.gate_values(u)
        beta = beta if self.momentum else None
        if not self.writes:
            eta, alpha = torch.zeros_like(eta), torch.ones_like(alpha)
        if self.memory == "mlp":  # C summed chunk-start gradients; by default a mean-sized step
            eta, v = eta * self.step_max, F.normalize(v, dim=-1)
        ys, cuts = [], bounds(u.shape[1], resets)
        sizes = [e - s for s, e in zip(cuts[:-1], cuts[1:])]
        parts = zip(*(t.split(sizes, dim=2) for t in (q, k, v)), *(g.split(sizes, dim=-1) for g in
                                                                   (eta, alpha, beta if beta is not None else eta)))
        with torch.autocast(u.device.type, enabled=False):
            for s, (qs, ks, vs, es, as_, bs) in zip(cuts[:-1], parts):
                if resets is not None:
                    st = zero_rows(st, keep_at(resets, s))
                y, st = self._run(qs, ks, vs, es, as_, bs if beta is not None else None, st)
                ys.append(y)
        return self.finish(u, torch.cat(ys, dim=2)), st


@contextmanager
def writes_off(model: nn.Module):
    """Within the block every Titans memory of `model` keeps the weights it starts from (write step
    0, retention 1, so momentum stays zero too): the held-out bits this costs are what the memory's
    writes are worth."""
    mems = [m for m in model.modules() if isinstance(m, TitansMemory)]
    for m in mems:
        m.writes = False
    try:
        yield model
    finally:
        for m in mems:
            m.writes = True


class SelfModifyingMemory(_Gated):
    """HOPE's self-modifying memory: M_mem, M_k, M_v written by DGD (see the module docstring)."""

    def __init__(self, d: int, H: int, *, chunk: int = 64, impl: str = "chunk", momentum: bool = True,
                 alpha0: float = 0.982) -> None:
        super().__init__(d, H, 3, (0.0, math.log(alpha0 / (1 - alpha0)), 0.0))  # eta 0.5, alpha0, beta 0.5
        self.chunk, self.impl, self.momentum = chunk, impl, momentum
        self.W_x = nn.Linear(d, d, bias=False)
        self.W_q = nn.Linear(d, d, bias=False)
        dh = self.dh
        # initial states of M_mem (zero: retrieves nothing), M_k and M_v (random maps)
        self.M_init = nn.Parameter(torch.zeros(H, dh, dh))
        self.Mk_init = nn.Parameter(torch.randn(H, dh, dh) / math.sqrt(dh))
        self.Mv_init = nn.Parameter(torch.randn(H, dh, dh) / math.sqrt(dh))

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        shape = (3 * self.H, self.dh, self.dh)  # [mem | k | v] stacked along the head axis
        return {"M": shape, "S": shape} if self.momentum else {"M": shape}

    def _keys_targets(self, x, Fkv, init) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (B, H, C, dh) and the three memories' targets (B, H, C, 3 dh) of one chunk from the
        chunk-start [M_k; M_v] = init + D (Fkv: (B, H, 2 dh, dh)); init ([B,] H, 3 dh, dh): the initial
        [M_mem; M_k; M_v] by rows. As normalise(M v) = normalise(M M_v x), one normalise serves all
        four. Targets are shifted for retention toward the initial state: the memories run on
        D = M - M_init with target v - M_init k (same gradient: M k - v = D k - (v - M_init k))."""
        dh = x.shape[-1]
        kv = x @ Fkv.transpose(-1, -2)  # M_k x, M_v x: (B, H, C, 2 dh)
        kvt = torch.cat([kv, kv[..., dh:] @ Fkv.transpose(-1, -2)], -1)  # + M_k M_v x, M_v M_v x
        k, tg = F.normalize(kvt.unflatten(-1, (4, dh)), dim=-1).split([1, 3], -2)  # k; v, M_k v, M_v v
        k = k.squeeze(-2)  # (B, H, C, dh)
        return k, tg.flatten(-2) - k @ init.transpose(-1, -2)

    def _init(self, dtype) -> torch.Tensor:
        return torch.cat([self.M_init, self.Mk_init, self.Mv_init], 1).to(dtype)  # (H, 3 dh, dh)

    def _chunk(self, x, q, eta, alpha, beta, st: State) -> tuple[torch.Tensor, State]:
        """One chunk through `linear_memory` (the token reference, and chunks cut by document
        starts): x, q (B, H, C, dh); gates (B, H, C). Returns y (B, H, C, dh)."""
        B, H, C, dh = x.shape
        init = self._init(x.dtype)
        D = st["M"].view(B, 3, H, dh, dh)[:, 1:].transpose(1, 2).reshape(B, H, 2 * dh, dh)
        k, tg = self._keys_targets(x, init[:, dh:] + D, init)
        tg = tg.unflatten(-1, (3, dh)).permute(0, 3, 1, 2, 4).reshape(B, 3 * H, C, dh)

        def rep(g):  # the three memories share keys and gates
            return None if g is None else g.repeat(1, 3, 1)

        qq = torch.cat([q, k, k], dim=1)  # only M_mem's read is used
        y, D, S = linear_memory(qq, k.repeat(1, 3, 1, 1), tg, rep(eta), rep(alpha), rep(beta), st["M"],
                                st.get("S"), chunk=C, impl=self.impl)
        y = y[:, :H] + q @ init[:, :dh].transpose(-1, -2)  # (B, H, C, dh)
        return y, ({"M": D, "S": S} if self.momentum else {"M": D})

    def _full_chunks(self, x, q, eta, alpha, beta, st: State) -> tuple[torch.Tensor, State]:
        """The chunked path when every chunk is full and no document starts inside: `hope_chunks`
        (few kernels per chunk) on the three memories stacked by rows."""
        B, H, T, dh = x.shape
        names = ("M", "S") if self.momentum else ("M",)
        D, S = [st[n].view(B, 3, H, dh, dh).transpose(1, 2).reshape(B, H, 3 * dh, dh) for n in names] + [None] * (
            2 - len(names))  # [M_mem; M_k; M_v] by rows
        y, D, S = hope_chunks(x, q, eta, alpha, beta, self._init(x.dtype), D, S, self.chunk)
        ends = [t.view(B, H, 3, dh, dh).transpose(1, 2).reshape(B, 3 * H, dh, dh) for t in (D, S)[:len(names)]]
        return y, dict(zip(names, ends))

    def forward(self, u: torch.Tensor, st: State, resets: Resets | None) -> tuple[torch.Tensor, State]:
        wd = work_dtype(u)
        x = heads(F.silu(self.W_x(u)), self.H).to(wd)  # (B, H, T, dh)
        q = F.normalize(heads(self.W_q(u), self.H).to(wd), dim=-1)
        eta, alpha, beta = self.gate_values(u)
        beta = beta if self.momentum else None
        ys, T = [], u.shape[1]
        if self.impl == "chunk" and T % self.chunk == 0 and (resets is None or not resets.cuts):
            if resets is not None:
                st = zero_rows(st, keep_at(resets, 0))
            with torch.autocast(u.device.type, enabled=False):
                y, st = self._full_chunks(x, q, eta, alpha, beta, st)
            return self.finish(u, y), st
        docs = bounds(T, resets)
        # chunks: the grid restarts at every document start
        starts = [s for s0, e0 in zip(docs[:-1], docs[1:]) for s in range(s0, e0, self.chunk)]
        sizes = [min(s + self.chunk, next(d for d in docs if d > s)) - s for s in starts]
        parts = zip(*(t.split(sizes, dim=2) for t in (x, q)), *(g.split(sizes, dim=-1) for g in
                                                                (eta, alpha, beta if beta is not None else eta)))
        cut = set(docs[:-1]) if resets is not None else set()
        with torch.autocast(u.device.type, enabled=False):
            for s, (xs, qs, es, as_, bs) in zip(starts, parts):
                if s in cut:
                    st = zero_rows(st, keep_at(resets, s))
                y, st = self._chunk(xs, qs, es, as_, bs if beta is not None else None, st)
                ys.append(y)
        return self.finish(u, torch.cat(ys, dim=2)), st
