r"""HOPE: self-modifying memory followed by a Continuum Memory System chain of MLPs.

Each of the n_layers blocks (pre-norm, residual; Nested Learning, Eqs. 94-97):

    h <- h + SelfModifyingMemory(LN(h))                 (nlcore.models.memory_layers)
    h <- h + MLP^(1)(LN_1(h)),  ...,  h <- h + MLP^(L)(LN_L(h))     (the CMS chain, fast to slow)
    logits = W_o LN(h)

with MLP^(l)(u) = W2_l GELU(W1_l u + b1_l) + b2_l. Two readings of the chain's frequencies
(`cms_mode`, beside the outer-optimizer reading of `nlcore.cms`):

* ``outer``: the chain's parameters belong to the CMS levels named in `chain_levels` (e.g.
  medium, slow) and `nlcore.cms` updates them every C_l optimizer steps, as any other CMS level.
* ``in_forward`` (the paper's Eq. 31 inside the forward pass): every row carries its own weight
  offsets D_l = (D1_l, D2_l), used as W_l + D_l. Every C_l tokens (`cms_chunks`, counted from
  the window start) the level is written from the summed next-character losses of its chunk,

      D_l <- D_l - lr * sum_{t in chunk} grad_{D_l} CE(logits_t, x_{t+1})

  all gradients taken at the chunk's frozen D_l (faster levels keep changing within it). This is
  test-time learning on text already read: a write at token boundary e uses the targets
  x_{s+1..e}, and it changes only the predictions made from position e on, after x_e has been
  read. The trainer and `evaluate` pass the targets (`uses_targets`), so the last position of a
  window learns from the next window's first character and windows carried one after another
  equal one long window; without targets only the window's own next characters are used. The
  writes are first-order: the outer gradient reaches W_l straight through W_l + D_l, not back
  through the writes (no second-order graph: a write is treated as an optimizer step).
  D_l is recurrent state (carried across windows, zeroed per row at document starts); the
  accumulated chunk gradients are not, so every C_l must divide the window length. Only the
  weight matrices are written (biases and norms are outer parameters).

The forward pass then runs in segments of C_1 tokens through the whole stack, with one
first-order backward per segment (`torch.autograd.grad` on the segment's loss with respect to the
chain's offsets only), also under `torch.no_grad()` evaluation. In training the segments only
find the offsets: since no gradient passes through a write, the outer graph is a function of the
parameters with every segment's offsets fixed, so the forward then runs once more over the whole
window, each chain MLP reading one offset per block of C_l tokens (`offset_matmul`), and the outer
backward runs once through it instead of once per segment (`outer_pass = "window"`; `"segments"` keeps each
segment's graph, the reference the tests compare it with). Windows with a document start inside
keep the segments' graphs.

Teach signals (`cms_teach`, in_forward only). ``global`` (the default, the reading above): every
level's gradient is that of the model's own next-character loss, so a write in layer i depends on
every layer above it. ``layer``: layer i's levels are written from the loss its own output gives
when read through the shared output head and final norm, CE(W_o LN(h_i), x_{t+1}) (deep
supervision; the paper does not fix which loss drives a CMS write). The writes of a layer then
depend only on the layer's input, so the stack runs layer by layer: the self-modifying memory over
the whole window, the chain segment by segment (a forward and a first-order backward through the
chain and the head only, to find the offsets), then the chain once over the window with one offset
per block (the outer graph). The head's and the final norm's parameters receive no gradient from
these writes; they are outer parameters as before.

Compiled parts (`SequenceModel.compile_parts`, nlcore.accel.compile): a whole block (`_block`: the
self-modifying memory with its norm, projections, gates and chunk loop, then the chain MLPs with
their offsets as inputs) and the head (`_head`). The segment loop, the loss and
`torch.autograd.grad` of the in-forward writes stay eager (dynamo does not trace autograd.grad);
the compiled block's backward runs inside that autograd.grad and again in the outer backward. The
block's modules are arguments, so the n_layers blocks share one compiled graph. Windows with a
document start inside (`resets.cuts`) run eagerly: their segments have lengths that change from
window to window. The model has no taps, so no tensor hook sits inside compiled code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nlcore.models.base import Resets, SequenceModel, State, join_state, split_state, state_dtype
from nlcore.models.memory_layers import SelfModifyingMemory, bounds, keep_at, zero_rows


class ChainMLP(nn.Module):
    """One CMS level: pre-norm residual MLP whose matrices may carry per-row offsets D1, D2."""

    def __init__(self, d: int, d_ff: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, d_ff)
        self.fc2 = nn.Linear(d_ff, d)

    def forward(self, h: torch.Tensor, D1: torch.Tensor | None = None, D2: torch.Tensor | None = None):
        u = self.norm(h)  # (B, S, d)
        z = self.fc1(u)
        if D1 is not None:
            z = z + offset_matmul(u, D1)  # (B, S, d_ff): u (W1 + D1)^T
        a = F.gelu(z)
        y = self.fc2(a)
        if D2 is not None:
            y = y + offset_matmul(a, D2)  # (B, S, d)
        return h + y


def offset_matmul(u: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """u D^T row by row: u (B, S, n); D (B, m, n), one offset for all S positions, or (B, k, m, n),
    one offset per block of S/k consecutive positions. Returns (B, S, m)."""
    if D.dim() == 3:
        return torch.bmm(u, D.transpose(1, 2).to(u.dtype))
    B, k, m, n = D.shape
    blocks = u.reshape(B * k, u.shape[1] // k, n)
    return torch.bmm(blocks, D.flatten(0, 1).transpose(1, 2).to(u.dtype)).reshape(B, -1, m)


class HOPE(SequenceModel):
    compiled_parts = ("_block", "_head")  # nlcore.accel.compile; see the module docstring

    def __init__(self, vocab_size: int, d_model: int = 256, n_layers: int = 4, n_heads: int = 4,
                 d_ff: int = 512, *, cms_chunks: tuple[int, ...] = (64, 256), cms_mode: str = "in_forward",
                 cms_lr: float = 1e-3, chain_levels: tuple[str, ...] | None = None, mem_chunk: int = 64,
                 mem_impl: str = "chunk", momentum: bool = True, mem_alpha0: float = 0.982, embed_level: str = "fast",
                 head_level: str = "fast", cms_teach: str = "global") -> None:
        super().__init__()
        if cms_mode not in ("in_forward", "outer"):
            raise ValueError(f"model.cms_mode: must be 'in_forward' or 'outer', got {cms_mode!r}")
        if cms_teach not in TEACH:
            raise ValueError(f"model.cms_teach: must be one of {TEACH}, got {cms_teach!r}")
        self.chunks, self.mode, self.lr, self.teach = tuple(cms_chunks), cms_mode, cms_lr, cms_teach
        if cms_mode == "in_forward" and cms_teach == "layer":  # the parts `_forward_by_layer` routes through
            self.compiled_parts = ("_memory", "_chain", "_teach", "_head")
        if cms_mode == "in_forward" and self.chunks[0] % mem_chunk:
            raise ValueError(f"model.cms_chunks: the fastest chunk {self.chunks[0]} must be a multiple of "
                             f"model.mem_chunk={mem_chunk} (segments must not split memory chunks)")
        if cms_mode == "outer":
            if chain_levels is None or len(chain_levels) != len(self.chunks):
                raise ValueError(f"model.cms_chunks: cms_mode=outer needs one CMS level per chain MLP; "
                                 f"{len(self.chunks)} MLPs, levels {chain_levels}")
        self.chain_levels = tuple(chain_levels or ())
        self.embed_level, self.head_level = embed_level, head_level
        self.d_model, self.d_ff = d_model, d_ff
        self.embed = nn.Embedding(vocab_size, d_model)
        self.mems = nn.ModuleList(SelfModifyingMemory(d_model, n_heads, chunk=mem_chunk, impl=mem_impl,
                                                      momentum=momentum, alpha0=mem_alpha0) for _ in range(n_layers))
        self.norm_mem = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.chain = nn.ModuleList(nn.ModuleList(ChainMLP(d_model, d_ff) for _ in self.chunks)
                                   for _ in range(n_layers))
        self.norm_out = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def level_of(self, param_name: str) -> str:
        parts = param_name.split(".")
        if self.io_level(param_name) is not None:
            return self.io_level(param_name)
        if parts[0] == "chain" and self.mode == "outer":
            return self.chain_levels[int(parts[2])]
        return "fast"

    def init_state(self, batch_size: int, device=None) -> State:
        dt = state_dtype(self)
        z = lambda *s: torch.zeros(batch_size, *s, device=device, dtype=dt)  # noqa: E731
        parts = []
        for mem in self.mems:
            st = {k: z(*s) for k, s in mem.state_shapes().items()}
            if self.mode == "in_forward":
                for j in range(len(self.chunks)):
                    st.update({f"D1_{j}": z(self.d_ff, self.d_model), f"D2_{j}": z(self.d_model, self.d_ff)})
            parts.append(st)
        return join_state(parts)

    @staticmethod
    def _block(mem: SelfModifyingMemory, norm: nn.LayerNorm, mlps: nn.ModuleList, h: torch.Tensor, st: State,
               offsets: list[tuple[torch.Tensor | None, torch.Tensor | None]]) -> tuple[torch.Tensor, State]:
        """One block: h + SelfModifyingMemory(LN(h)), then the chain MLPs (offsets: one (D1, D2) per level)."""
        h, st = HOPE._memory(mem, norm, h, st)
        return HOPE._chain(mlps, h, offsets), st

    @staticmethod
    def _memory(mem: SelfModifyingMemory, norm: nn.LayerNorm, h: torch.Tensor, st: State) -> tuple[torch.Tensor, State]:
        """h + SelfModifyingMemory(LN(h)) and the memory's new state."""
        y, st = mem(norm(h), st, None)
        return h + y, st

    @staticmethod
    def _chain(mlps: nn.ModuleList, h: torch.Tensor,
               offsets: list[tuple[torch.Tensor | None, torch.Tensor | None]]) -> torch.Tensor:
        """The chain MLPs, fast to slow, each with its (D1, D2)."""
        for mlp, (D1, D2) in zip(mlps, offsets):
            h = mlp(h, D1, D2)
        return h

    @staticmethod
    def _teach(mlps: nn.ModuleList, norm_out: nn.LayerNorm, head: nn.Linear, h: torch.Tensor,
               offsets: list[tuple[torch.Tensor, torch.Tensor]], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cms_teach="layer" on one segment: the chain's output and the summed next-character loss of
        that output read through the final norm and the head."""
        h = HOPE._chain(mlps, h, offsets)
        out = head(norm_out(h))
        ld = torch.promote_types(out.dtype, torch.float32)
        return h, F.cross_entropy(out.to(ld).flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")

    def _head(self, h: torch.Tensor) -> torch.Tensor:  # (B, S, d) -> logits (B, S, V)
        return self.head(self.norm_out(h))

    def _stack(self, x_seg: torch.Tensor, st: State, offsets: dict | None,
               compiled: bool = True) -> tuple[torch.Tensor, State]:
        """Logits of one segment (B, S, V); `offsets["{i}.D1_{j}"]`, `offsets["{i}.D2_{j}"]`: layer i, level j.
        compiled: route the blocks and the head through their compiled parts (if compiled)."""
        block, head = (self.part("_block"), self.part("_head")) if compiled else (self._block, self._head)
        h = self.embed(x_seg)
        new = []
        for i, (mem, norm) in enumerate(zip(self.mems, self.norm_mem)):
            Ds = [(offsets.get(f"{i}.D1_{j}"), offsets.get(f"{i}.D2_{j}")) for j in range(len(self.chunks))]
            h, mst = block(mem, norm, self.chain[i], h, split_state(st, i), Ds)
            new.append(mst)
        return head(h), join_state(new)

    uses_targets = True  # the trainer and evaluate pass each position's next character
    # in_forward training: "window" runs the outer forward and backward over the whole window after
    # the segments have found their offsets; "segments" keeps each segment's graph (the reference)
    outer_pass = "window"

    def forward(self, x: torch.Tensor, state: State | None = None, resets: Resets | None = None,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        B, T = x.shape
        if targets is None:  # only the window's own next characters: the last position has none
            targets = F.pad(x[:, 1:], (0, 1), value=-100)
        if state is None:
            state = self.init_state(B, x.device)
        in_fwd = self.mode == "in_forward"
        if in_fwd and any(T % c for c in self.chunks):
            raise ValueError(f"model.cms_chunks: every chunk {self.chunks} must divide the window length {T}")
        if in_fwd and self.teach == "layer":
            return self._forward_by_layer(x, state, resets, targets)
        offsets = {k: v for k, v in state.items() if ".D" in k}  # "{layer}.D{1,2}_{level}" (in_forward only)
        acc: dict[str, torch.Tensor | None] = {k: None for k in offsets}  # the chunks' summed gradients
        mem_state = {k: v for k, v in state.items() if ".D" not in k}
        logits = []
        cuts = bounds(T, resets, grid=self.chunks[0] if in_fwd else None)
        outer = torch.is_grad_enabled()
        compiled = resets is None or not resets.cuts  # segments of one length: compiled once
        # the outer pass over the whole window once the segments' offsets are known (see the docstring)
        window = in_fwd and outer and compiled and self.outer_pass == "window"
        seen: dict[str, list[torch.Tensor]] = {k: [] for k in offsets}  # each segment's offsets
        start = mem_state
        segment_graph = outer and not window  # the outer graph is built segment by segment
        for s, e in zip(cuts[:-1], cuts[1:]):
            if resets is not None:  # rows starting a document: zero state, offsets, sums
                keep = keep_at(resets, s)
                mem_state, offsets = zero_rows(mem_state, keep), zero_rows(offsets, keep)
                acc = {k: g if g is None else zero_rows({k: g}, keep)[k] for k, g in acc.items()}
            if not in_fwd:
                out, mem_state = self._stack(x[:, s:e], mem_state, {}, compiled)
                logits.append(out)
                continue
            if s == 0:
                start = mem_state
            if window:
                for k, v in offsets.items():
                    seen[k].append(v.detach())  # no outer gradient through a write (first-order)
            with torch.enable_grad():
                leaves = {k: v.detach().requires_grad_(True) for k, v in offsets.items()}
                out, mem_state = self._stack(x[:, s:e], mem_state, leaves, compiled)
                ld = torch.promote_types(out.dtype, torch.float32)
                loss = F.cross_entropy(out.to(ld).flatten(0, 1), targets[:, s:e].flatten(),
                                       ignore_index=-100, reduction="sum")  # the segment's summed CE
                grads = torch.autograd.grad(loss, list(leaves.values()), retain_graph=segment_graph)
                for k, g in zip(leaves, grads):
                    acc[k] = g if acc[k] is None else acc[k] + g
            if not segment_graph:
                out, mem_state = out.detach(), {k: v.detach() for k, v in mem_state.items()}
            logits.append(out)
            for k, g in acc.items():
                if g is not None and e % self.chunks[int(k.rsplit("_", 1)[1])] == 0:  # the level's chunk is done
                    offsets[k], acc[k] = (offsets[k] - self.lr * g).detach(), None  # write
        if window:  # level j's offsets change every C_j / C_1 segments: one per block of C_j tokens
            blocks = {k: torch.stack(v[::self.chunks[int(k.rsplit("_", 1)[1])] // self.chunks[0]], dim=1)
                      for k, v in seen.items()}
            out, mem_state = self._stack(x, start, blocks, compiled)
            logits = [out]
        new = {**mem_state, **{k: v.to(state_dtype(self)) for k, v in offsets.items()}}
        return torch.cat(logits, dim=1), new

    def _levels(self, offsets: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One layer's offsets {"D1_j", "D2_j"} as the chain's list of (D1, D2), fast to slow."""
        return [(offsets[f"D1_{j}"], offsets[f"D2_{j}"]) for j in range(len(self.chunks))]

    def _forward_by_layer(self, x: torch.Tensor, state: State, resets: Resets | None,
                          targets: torch.Tensor) -> tuple[torch.Tensor, State]:
        """cms_teach="layer" (the module docstring): layer by layer, the memory over the window, the
        chain's segments writing the layer's offsets from its own loss, then the chain's outer pass."""
        T = x.shape[1]
        cuts = bounds(T, resets, grid=self.chunks[0])
        segments = list(zip(cuts[:-1], cuts[1:]))
        compiled = resets is None or not resets.cuts  # segments of one length: compiled once
        memory, chain, teach, head = (self.part(n) if compiled else getattr(self, n)
                                      for n in ("_memory", "_chain", "_teach", "_head"))
        outer = torch.is_grad_enabled()
        window = compiled and self.outer_pass == "window"
        h, new = self.embed(x), []
        for i, (mem, norm, mlps) in enumerate(zip(self.mems, self.norm_mem, self.chain)):
            st = split_state(state, i)
            mst = {k: v for k, v in st.items() if not k.startswith("D")}
            offsets = {k: v for k, v in st.items() if k.startswith("D")}
            if compiled:  # a document may start only at the window start
                hm, mst = memory(mem, norm, h, zero_rows(mst, keep_at(resets, 0)) if resets is not None else mst)
            else:
                parts = []
                for s, e in segments:
                    if resets is not None:
                        mst = zero_rows(mst, keep_at(resets, s))
                    hs, mst = memory(mem, norm, h[:, s:e], mst)
                    parts.append(hs)
                hm = torch.cat(parts, dim=1)
            hd, acc, seen, outs = hm.detach(), dict.fromkeys(offsets), [], []
            for s, e in segments:
                if resets is not None:  # rows starting a document: zero offsets and sums
                    keep = keep_at(resets, s)
                    offsets = zero_rows(offsets, keep)
                    acc = {k: g if g is None else zero_rows({k: g}, keep)[k] for k, g in acc.items()}
                seen.append({k: v.detach() for k, v in offsets.items()})  # no outer gradient through a write
                with torch.enable_grad():
                    leaves = {k: v.detach().requires_grad_(True) for k, v in offsets.items()}
                    out, loss = teach(mlps, self.norm_out, self.head, hd[:, s:e], self._levels(leaves), targets[:, s:e])
                    grads = torch.autograd.grad(loss, list(leaves.values()))
                outs.append(out.detach())
                offsets = dict(offsets)
                for k, g in zip(leaves, grads):
                    acc[k] = g if acc[k] is None else acc[k] + g
                    if e % self.chunks[int(k.rsplit("_", 1)[1])] == 0:  # the level's chunk is done: write
                        offsets[k], acc[k] = (offsets[k] - self.lr * acc[k]).detach(), None
            if not outer:  # evaluation: the segments' outputs are the layer's output
                h = torch.cat(outs, dim=1)
            elif window:  # level j's offsets change every C_j / C_1 segments: one per block of C_j tokens
                blocks = {k: torch.stack([o[k] for o in seen[::self.chunks[int(k.rsplit("_", 1)[1])] // self.chunks[0]]],
                                         dim=1) for k in offsets}
                h = chain(mlps, hm, self._levels(blocks))
            else:  # the reference: each segment's own graph
                h = torch.cat([chain(mlps, hm[:, s:e], self._levels(o)) for (s, e), o in zip(segments, seen)], dim=1)
            new.append({**mst, **{k: v.to(state_dtype(self)) for k, v in offsets.items()}})
        return head(h), join_state(new)


TEACH = ("global", "layer")  # cms_teach: the loss that drives the in-forward writes (module docstring)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["HOPE", "ChainMLP", "count_params"]
