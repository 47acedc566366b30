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

Hierarchical state (``hierarchical_state=True``, off by default): the slower levels also carry
a per-row summary across windows, at their own timescale. Level l in {medium, slow} keeps an
exponential memory m_l (B, d) of its input stream u_l (h_1 for medium, h_2 for slow), updated
once per window with retention alpha_l = exp(-1/C_l) (C_l: the level's chunk size in windows),

    m_l <- alpha_l m_l + (1 - alpha_l) mean_t u_{l,t}

and read through a zero-initialised projection added to the level's input, FFN_l(LN(u) + P_l m_l).
A document start in row b hides m_l from that row's positions from the start on, and the
update then averages only the positions after the row's last document start (old memory dropped).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nlcore.models.base import Resets, SequenceModel, State, state_dtype
from nlcore.models.layers import FFN


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
                 head_level: str = "fast", zero_init_ffn_out: bool = True,
                 hierarchical_state: bool = False, chunks: tuple[int, int] = (16, 256)) -> None:
        super().__init__()
        self.hierarchical = hierarchical_state
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
        if hierarchical_state:
            self.proj_medium = nn.Linear(d_model, d_model, bias=False)
            self.proj_slow = nn.Linear(d_model, d_model, bias=False)
            for p in (self.proj_medium, self.proj_slow):
                nn.init.zeros_(p.weight)  # starts exactly as the model without summaries
            self.retention = {"medium": math.exp(-1.0 / chunks[0]), "slow": math.exp(-1.0 / chunks[1])}

    def level_of(self, param_name: str) -> str:
        top = param_name.split(".")[0]
        if top == "proj_medium":
            return "medium"
        if top == "proj_slow":
            return "slow"
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
        z = torch.zeros(batch_size, self.d_model, device=device, dtype=state_dtype(self))
        st = {"h": z, "c": z.clone()}
        if self.hierarchical:
            st.update(mem_medium=z.clone(), mem_slow=z.clone())
        return st

    def _summary(self, name: str, u: torch.Tensor, state: State, resets: Resets | None,
                 new: State) -> torch.Tensor:
        """Add P_l m_l to the level input u (B, T, d); store the updated m_l in `new`."""
        m = state[f"mem_{name}"]  # (B, d)
        read = getattr(self, f"proj_{name}")(m.to(u.dtype)).unsqueeze(1)  # (B, 1, d)
        a = self.retention[name]
        if resets is None:
            new[f"mem_{name}"] = a * m + (1 - a) * u.detach().to(m.dtype).mean(1)
            return u + read
        T = u.shape[1]
        t = torch.arange(T, device=u.device)
        seen = resets.mask.cumsum(1) > 0  # (B, T): at or after the row's first document start
        last = torch.where(resets.mask, t, -1).amax(1)  # (B,): the row's last document start, or -1
        tail = (t.unsqueeze(0) >= last.clamp_min(0).unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
        tail = tail.to(m.dtype)
        mean = (u.detach().to(m.dtype) * tail).sum(1) / tail.sum(1)  # (B, d)
        new[f"mem_{name}"] = a * m * (last < 0).to(m.dtype).unsqueeze(1) + (1 - a) * mean
        return u + read * (~seen).to(u.dtype).unsqueeze(-1)

    # The maths after the recurrence, in pieces split at the taps, so that a hooked tap sits
    # between compiled pieces (nlcore.accel.compile); `mem` adds a level's summary to its input.
    compiled_parts = ("_embed", "_tail", "_rest", "_medium", "_slow", "_out")

    def _embed(self, x: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, d), stored time-major
        # gathered in (T, B) order: the cuDNN LSTM works time-major, so a batch-first view of
        # time-major memory spares it the transposing copies of its input (forward) and of its
        # output's gradient (backward); its output is again such a view (same values)
        e = self.embed(x.t()).transpose(0, 1)
        dev = x.device.type
        if torch.is_autocast_enabled(dev):  # the dtype the LSTM casts it to anyway: the casts fuse here
            e = e.to(torch.get_autocast_dtype(dev))
        return e

    def _norm(self, name: str, u: torch.Tensor) -> torch.Tensor:  # LN(u); the prototype form: u
        return getattr(self, name)(u) if self.norm_residual else u

    def _add(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # h + y; the prototype form: y
        return h + y if self.norm_residual else y

    def _medium(self, h1: torch.Tensor, mem=None) -> torch.Tensor:  # y_2 = FFN_m(LN(h_1) [+ P_m m_m])
        u = self._norm("norm_medium", h1)
        return self.ffn_medium(u if mem is None else mem("medium", u))

    def _slow(self, h1: torch.Tensor, y2: torch.Tensor, mem=None) -> tuple[torch.Tensor, torch.Tensor]:
        h2 = self._add(h1, y2)
        u = self._norm("norm_slow", h2)
        return h2, self.ffn_slow(u if mem is None else mem("slow", u))  # h_2, y_3 = FFN_s(LN(h_2) [+ P_s m_s])

    def _out(self, h2: torch.Tensor, y3: torch.Tensor) -> torch.Tensor:  # W_o LN(h_2 + y_3)
        return self.head(self._norm("norm_out", self._add(h2, y3)))

    def _rest(self, h1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:  # slow level and head
        return self._out(*self._slow(h1, y2))

    def _tail(self, h1: torch.Tensor) -> torch.Tensor:  # all three (medium and slow taps not hooked)
        return self._rest(h1, self._medium(h1))

    def forward(self, x: torch.Tensor, state: State | None = None,
                resets: Resets | None = None) -> tuple[torch.Tensor, State]:
        B = x.shape[0]
        if state is None:
            state = self.init_state(B, x.device)
        new: State = {}
        e = self.part("_embed")(x)  # (B, T, d)
        h1, h, c = run_lstm(self.lstm, e, state["h"], state["c"], resets)  # (B, T, d)
        h1 = self.tap("fast", h1)
        mem = None
        if self.hierarchical:  # the summaries update `new`: those pieces run uncompiled
            def mem(name, u):
                return self._summary(name, u, state, resets, new)
        # the prototype form and the summaries run uncompiled; the tier-4 pieces may be compiled
        part = self.part if self.norm_residual and mem is None else (lambda name: getattr(self, name))
        if mem is None and not (self.hooked("medium") or self.hooked("slow")):
            logits = part("_tail")(h1)  # (B, T, V)
        elif mem is None and not self.hooked("slow"):
            logits = part("_rest")(h1, self.tap("medium", part("_medium")(h1)))
        else:
            y2 = self.tap("medium", part("_medium")(h1, mem))
            h2, y3 = part("_slow")(h1, y2, mem)
            logits = part("_out")(h2, self.tap("slow", y3))
        dt = state_dtype(self)  # carried in (at least) float32 even under bf16 autocast
        new.update(h=h.to(dt), c=c.to(dt))
        return logits, new


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
        z = torch.zeros(batch_size, self.d_model, device=device, dtype=state_dtype(self))
        return {"h": z, "c": z.clone()}

    def forward(self, x, state=None, resets=None):
        if state is None:
            state = self.init_state(x.shape[0], x.device)
        h1, h, c = run_lstm(self.lstm, self.embed(x), state["h"], state["c"], resets)
        dt = state_dtype(self)
        return self.head(self.tap("fast", h1)), {"h": h.to(dt), "c": c.to(dt)}
