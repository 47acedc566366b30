r"""A Titans language model: embedding -> n_layers x [memory layer, FFN] -> head.

Each block is pre-norm and residual (Titans' memory-as-a-layer, "MAL", without attention):

    h <- h + TitansMemory(LN(h))        (nlcore.models.memory_layers: a memory per row)
    h <- h + FFN(LN(h))
    logits = W_o LN(h)

The memories are the recurrent state: one per (row, layer, head), carried across windows and
reset per row at document starts, so persistent state and `state.reset=doc` work as for the LSTM.
All parameters belong to the "fast" CMS level (the embedding and head to `embed_level` /
`head_level`): the memories are the model's inner, higher-frequency learners.

Compiled parts (`SequenceModel.compile_parts`, nlcore.accel.compile): a whole block (`_block`: both
norms, the memory's projections, gates, chunk-parallel memory and output gate, the FFN and both
residual adds) and the head (`_head`). The block's modules are arguments, not constants, so the
n_layers blocks share one compiled graph (their parameters are its inputs: one compilation per
shape, not per layer). A window whose document starts are all at t = 0 zeroes those rows' states
first and runs compiled; a window with a document start inside (`resets.cuts`) runs the blocks
eagerly, since the memories split it at the host-known cuts (shapes that change window to
window). The model has no taps, so no tensor hook sits inside compiled code.
"""

from __future__ import annotations

import torch
from torch import nn

from nlcore.models.base import Resets, SequenceModel, State, join_state, split_state, state_dtype
from nlcore.models.layers import FFN
from nlcore.models.memory_layers import TitansMemory, keep_at, zero_rows


class TitansLM(SequenceModel):
    def __init__(self, vocab_size: int, d_model: int = 256, n_layers: int = 4, n_heads: int = 4,
                 d_ff: int = 512, *, memory: str = "mlp", mem_hidden: int = 2, retention: str = "zero",
                 step_max: float = 0.0, normalize: bool = False, state_max: float = 0.0, grad_chunks: int = 0,
                 mem_chunk: int = 64,
                 mem_impl: str = "chunk", momentum: bool = True, mem_alpha0: float = 0.982, embed_level: str = "fast",
                 head_level: str = "fast") -> None:
        super().__init__()
        self.embed_level, self.head_level = embed_level, head_level
        self.embed = nn.Embedding(vocab_size, d_model)
        self.mems = nn.ModuleList(TitansMemory(d_model, n_heads, memory=memory, hidden_mult=mem_hidden,
                                               chunk=mem_chunk, impl=mem_impl, momentum=momentum, alpha0=mem_alpha0,
                                               retention=retention, step_max=step_max, normalize=normalize,
                                               state_max=state_max, grad_chunks=grad_chunks)
                                  for _ in range(n_layers))
        self.norm_mem = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.ffns = nn.ModuleList(FFN(d_model, d_ff) for _ in range(n_layers))
        self.norm_ffn = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.norm_out = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def level_of(self, param_name: str) -> str:
        return self.io_level(param_name) or "fast"

    def init_state(self, batch_size: int, device=None) -> State:
        dt = state_dtype(self)
        return join_state([{k: torch.zeros(batch_size, *s, device=device, dtype=dt)
                            for k, s in m.state_shapes().items()} for m in self.mems])

    @torch.no_grad()
    def memory_ratio(self, x: torch.Tensor, seq_len: int, layer: int = 0) -> float:
        """|θ| / |θ_init| of layer `layer`'s MLP memory (W1 and W2 together) after reading the row x
        (1, N) window by window from the zero state: 1 where the memory keeps its initial weights,
        0 at the fixed point θ = 0 where its inner gradient vanishes."""
        mem = self.mems[layer]
        if mem.memory != "mlp":
            raise ValueError(f"memory_ratio: layer {layer} has a {mem.memory} memory, not an MLP one")
        state = None
        for s in range(0, x.shape[1] - seq_len + 1, seq_len):
            _, state = self(x[:, s:s + seq_len], state)
        W1, W2 = mem.W1_init + state[f"{layer}.W1"][0], mem.W2_init + state[f"{layer}.W2"][0]
        now = torch.cat([W1.flatten(), W2.flatten()]).norm()
        return float(now / torch.cat([mem.W1_init.flatten(), mem.W2_init.flatten()]).norm())

    compiled_parts = ("_block", "_head")  # nlcore.accel.compile; see the module docstring

    @staticmethod
    def _block(mem: TitansMemory, n1: nn.LayerNorm, ffn: FFN, n2: nn.LayerNorm, h: torch.Tensor, st: State,
               resets: Resets | None = None) -> tuple[torch.Tensor, State]:
        """One block: h + y, y = TitansMemory(LN(h)), then + FFN(LN(.)); h (B, T, d), st that layer's state."""
        y, st = mem(n1(h), st, resets)
        h = h + y
        return h + ffn(n2(h)), st

    def _head(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> logits (B, T, V)
        return self.head(self.norm_out(h))

    def forward(self, x: torch.Tensor, state: State | None = None,
                resets: Resets | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.init_state(x.shape[0], x.device)
        if resets is not None and not resets.cuts:  # documents start at t = 0 only: zero those rows here
            state, resets = zero_rows(state, keep_at(resets, 0)), None
        block = self.part("_block") if resets is None else self._block  # cuts inside: eager
        h = self.embed(x)  # (B, T, d)
        new = []
        for i, (mem, n1, ffn, n2) in enumerate(zip(self.mems, self.norm_mem, self.ffns, self.norm_ffn)):
            h, st = block(mem, n1, ffn, n2, h, split_state(state, i), resets)
            new.append(st)
        return self.part("_head")(h), join_state(new)
