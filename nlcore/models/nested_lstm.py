r"""The prototype's three-level model, every part trained.

Embedding -> LSTM (fast level) -> FFN (medium level) -> FFN (slow level) -> output head.

Prototype form (``norm_residual=False``):
    h_1 = LSTM(E x),  h_2 = FFN_m(h_1),  h_3 = FFN_s(h_2),  logits = W_o h_3
"Tier 4" form (``norm_residual=True``, pre-norm residual branches):
    h_1 = LSTM(E x),  h_2 = h_1 + FFN_m(LN(h_1)),  h_3 = h_2 + FFN_s(LN(h_2)),  logits = W_o LN(h_3)
with FFN(u) = W_2 act(W_1 u + b_1) + b_2. The level outputs y_l tapped for objectives such as
surprise are h_1 (fast) and each FFN's own output FFN(.) (medium, slow).

Recurrent state: ``{"h": (B, H), "c": (B, H)}``, batch-first; document resets inside a window
split the cuDNN call at the host-known cut positions and zero the rows that start a document.
"""

from __future__ import annotations

import torch
from torch import nn

from nlcore.models.base import Resets, SequenceModel, State


class FFN(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        return self.drop(self.fc2(self.act(self.fc1(u))))


def run_lstm(lstm: nn.LSTM, e: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
             resets: Resets | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a batch-first single-layer LSTM over (B, T, d) from batch-first (B, H) states,
    zeroing row b's state exactly at the positions where resets.mask[b, t] is True."""
    if resets is not None:
        keep0 = (~resets.mask[:, 0]).to(h.dtype).unsqueeze(-1)  # (B, 1): rows not starting a document
        h, c = h * keep0, c * keep0
    bounds = [0, *(resets.cuts if resets is not None else ()), e.shape[1]]
    outs = []
    for i, (s, t) in enumerate(zip(bounds[:-1], bounds[1:])):
        if i > 0:
            keep = (~resets.mask[:, s]).to(h.dtype).unsqueeze(-1)  # zero rows whose document starts at s
            h, c = h * keep, c * keep
        out, (h1, c1) = lstm(e[:, s:t], (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()))
        h, c = h1.squeeze(0), c1.squeeze(0)
        outs.append(out)
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)), h, c


class NestedLSTM(SequenceModel):
    """Embedding -> LSTM (fast) -> FFN (medium) -> FFN (slow) -> head; see the module docstring."""

    def __init__(self, vocab_size: int, d_model: int = 256, d_ff: int = 512, *, norm_residual: bool = True,
                 activation: str = "gelu", dropout: float = 0.0, embed_level: str = "fast",
                 head_level: str = "fast", zero_init_ffn_out: bool = True) -> None:
        super().__init__()
        self.vocab_size, self.d_model, self.norm_residual = vocab_size, d_model, norm_residual
        self.embed_level, self.head_level = embed_level, head_level
        self.embed = nn.Embedding(vocab_size, d_model)
        self.lstm = nn.LSTM(d_model, d_model, batch_first=True)
        self.ffn_medium = FFN(d_model, d_ff, activation, dropout)
        self.ffn_slow = FFN(d_model, d_ff, activation, dropout)
        if norm_residual:
            self.norm_medium = nn.LayerNorm(d_model)
            self.norm_slow = nn.LayerNorm(d_model)
            self.norm_out = nn.LayerNorm(d_model)
            if zero_init_ffn_out:  # residual branches start as the identity
                for f in (self.ffn_medium, self.ffn_slow):
                    nn.init.zeros_(f.fc2.weight)
                    nn.init.zeros_(f.fc2.bias)
        self.head = nn.Linear(d_model, vocab_size)

    def level_of(self, param_name: str) -> str:
        top = param_name.split(".")[0]
        if top in ("embed",):
            return self.embed_level
        if top in ("head", "norm_out"):
            return self.head_level
        if top == "lstm":
            return "fast"
        if top in ("ffn_medium", "norm_medium"):
            return "medium"
        if top in ("ffn_slow", "norm_slow"):
            return "slow"
        raise KeyError(f"NestedLSTM: no level for parameter {param_name!r}")

    def init_state(self, batch_size: int, device=None) -> State:
        z = torch.zeros(batch_size, self.d_model, device=device)
        return {"h": z, "c": z.clone()}

    def forward(self, x: torch.Tensor, state: State | None = None,
                resets: Resets | None = None) -> tuple[torch.Tensor, State]:
        B = x.shape[0]
        if state is None:
            state = self.init_state(B, x.device)
        e = self.embed(x)  # (B, T, d)
        h1, h, c = run_lstm(self.lstm, e, state["h"], state["c"], resets)  # (B, T, d)
        h1 = self.tap("fast", h1)
        if self.norm_residual:
            h2 = h1 + self.tap("medium", self.ffn_medium(self.norm_medium(h1)))
            h3 = h2 + self.tap("slow", self.ffn_slow(self.norm_slow(h2)))
            logits = self.head(self.norm_out(h3))  # (B, T, V)
        else:
            h2 = self.tap("medium", self.ffn_medium(h1))
            h3 = self.tap("slow", self.ffn_slow(h2))
            logits = self.head(h3)
        return logits, {"h": h.float(), "c": c.float()}  # carried in float32 even under bf16 autocast


class LSTMLM(SequenceModel):
    """A plain LSTM language model (Embedding -> LSTM -> head), the speed and quality baseline."""

    def __init__(self, vocab_size: int, d_model: int = 256, **_: object) -> None:
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        self.lstm = nn.LSTM(d_model, d_model, batch_first=True)
        self.head = nn.Linear(d_model, vocab_size)

    def level_of(self, param_name: str) -> str:
        return "fast"

    def init_state(self, batch_size: int, device=None) -> State:
        z = torch.zeros(batch_size, self.d_model, device=device)
        return {"h": z, "c": z.clone()}

    def forward(self, x, state=None, resets=None):
        if state is None:
            state = self.init_state(x.shape[0], x.device)
        h1, h, c = run_lstm(self.lstm, self.embed(x), state["h"], state["c"], resets)
        return self.head(self.tap("fast", h1)), {"h": h.float(), "c": c.float()}
