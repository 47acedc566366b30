r"""A causal pre-norm Transformer language model with rotary positions: the attention baseline.

Token embedding -> L pre-norm blocks -> final LayerNorm -> linear head (untied):

.. math::

    h_0 = E x, \qquad
    u_l = h_{l-1} + \mathrm{Attn}(\mathrm{LN}(h_{l-1})), \qquad
    h_l = u_l + \mathrm{FFN}(\mathrm{LN}(u_l)), \qquad
    \mathrm{logits} = W_o \, \mathrm{LN}(h_L) + b_o

with FFN(u) = W_2 GELU(W_1 u + b_1) + b_2 and multi-head causal attention over the window,

.. math::

    \mathrm{Attn}(u) = W_{out} \, \mathrm{concat}_h \,
        \mathrm{softmax}\!\Big(\frac{R_i q_{h,i} \cdot R_j k_{h,j}}{\sqrt{d_h}} + M_{ij}\Big) v_{h,j}

where R_t rotates each pair (x_m, x_{m + d_h/2}) of a head by the angle t * 10000^{-2m/d_h}
(rotary position embeddings, Su et al. 2021, "RoFormer"), so the score depends on i - j only,
and M_ij = 0 where j <= i (and j lies in the same document as i), -inf elsewhere.

The model is stateless: the context is the window, ``init_state`` is ``{}`` and ``forward``
returns ``{}`` whatever state it is given. Document resets (``Resets``) inside a window mask
attention across the boundary: with segment ids s_{b,t} = sum_{t' <= t} mask[b, t'], position
i attends to j iff j <= i and s_i = s_j. Positions keep counting from the window start, which
is exact under RoPE (scores depend only on i - j). Windows without cuts take the fused
``is_causal`` path.

Initialisation (GPT-2): N(0, 0.02) for every linear and the embedding, zero biases, and the
residual output projections (attention W_out, FFN W_2) at N(0, 0.02 / sqrt(2 L)).

CMS levels: the embedding belongs to ``embed_level``, the head and its final LayerNorm to
``head_level``, every block to ``"fast"``. The final residual stream h_L is tapped as ``"fast"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nlcore.models.base import Resets, SequenceModel, State
from nlcore.models.layers import FFN


def rope_angles(seq_len: int, head_dim: int, *, base: float = 10000.0, device=None,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles theta_{t,m} = t * base^{-2m/d_h}, each (T, d_h/2)."""
    if head_dim % 2:
        raise ValueError(f"head_dim: rotary embeddings need an even head width, got {head_dim}")
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=dtype) / head_dim)  # (d_h/2,)
    t = torch.arange(seq_len, device=device, dtype=dtype)  # (T,) positions 0..T-1 in the window
    ang = t[:, None] * inv_freq[None, :]  # (T, d_h/2)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x_m, x_{m+d_h/2}) of x (..., T, d_h) by the angles given as (T, d_h/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # (..., T, d_h/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (..., T, d_h)


def document_mask(resets: Resets) -> torch.Tensor:
    """(B, 1, T, T) bool: True where position i may attend to j (j <= i, same document)."""
    seg = resets.mask.long().cumsum(1)  # (B, T) document index of each position
    T = seg.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=seg.device).tril()  # (T, T) j <= i
    same = seg[:, :, None] == seg[:, None, :]  # (B, T, T) same document
    return (same & causal).unsqueeze(1)  # (B, 1, T, T)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with rotary q/k and a fused qkv projection."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.dropout = n_heads, d_model // n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)  # [W_q; W_k; W_v]
        self.proj = nn.Linear(d_model, d_model)  # W_out
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()  # residual dropout

    def forward(self, u: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        B, T, d = u.shape
        qkv = self.qkv(u).view(B, T, 3, self.n_heads, self.head_dim)  # (B, T, 3, H, d_h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, d_h) each
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # R_t q_t, R_t k_t
        p = self.dropout if self.training else 0.0
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, T, d_h)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # within documents
        y = y.transpose(1, 2).reshape(B, T, d)  # (B, T, d) heads concatenated
        return self.drop(self.proj(y))


class Block(nn.Module):
    """h -> h + Attn(LN(h)) -> . + FFN(LN(.))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, d_ff, "gelu", dropout)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        h = h + self.attn(self.norm_attn(h), cos, sin, mask)  # u_l
        return h + self.ffn(self.norm_ffn(h))  # h_l


class CausalTransformer(SequenceModel):
    """Embedding -> n_layers pre-norm RoPE blocks -> LN -> head; see the module docstring."""

    def __init__(self, vocab_size: int, d_model: int = 256, n_layers: int = 4, n_heads: int = 4,
                 d_ff: int = 1024, dropout: float = 0.0, embed_level: str = "fast",
                 head_level: str = "fast") -> None:
        super().__init__()
        for name, val in (("vocab_size", vocab_size), ("d_model", d_model), ("n_layers", n_layers),
                          ("n_heads", n_heads), ("d_ff", d_ff)):
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"{name}: must be a positive int, got {val!r}")
        if d_model % n_heads:
            raise ValueError(f"n_heads: must divide d_model={d_model}, got {n_heads}")
        if (d_model // n_heads) % 2:
            raise ValueError(f"n_heads: rotary embeddings need an even head width d_model/n_heads, "
                             f"got {d_model}/{n_heads} = {d_model // n_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        self.vocab_size, self.d_model, self.n_layers, self.n_heads = vocab_size, d_model, n_layers, n_heads
        self.head_dim = d_model // n_heads
        self.embed_level, self.head_level = embed_level, head_level
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm_out = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        std_res = 0.02 / math.sqrt(2 * self.n_layers)  # residual branches: 1/sqrt(2L)
        for b in self.blocks:
            nn.init.normal_(b.attn.proj.weight, 0.0, std_res)
            nn.init.normal_(b.ffn.fc2.weight, 0.0, std_res)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def level_of(self, param_name: str) -> str:
        top = param_name.split(".")[0]
        if self.io_level(param_name) is not None:
            return self.io_level(param_name)
        if top == "blocks":
            return "fast"
        raise KeyError(f"CausalTransformer: no level for parameter {param_name!r}")

    def init_state(self, batch_size: int, device=None) -> State:
        return {}

    def forward(self, x: torch.Tensor, state: State | None = None,
                resets: Resets | None = None) -> tuple[torch.Tensor, State]:
        T = x.shape[1]
        h = self.embed(x)  # (B, T, d) h_0 = E x
        angle_dtype = torch.promote_types(self.embed.weight.dtype, torch.float32)  # float64 stays float64
        cos, sin = rope_angles(T, self.head_dim, device=x.device, dtype=angle_dtype)  # (T, d_h/2) each
        mask = document_mask(resets) if resets is not None and resets.cuts else None  # (B, 1, T, T)
        for block in self.blocks:
            h = block(h, cos, sin, mask)  # (B, T, d) h_l
        h = self.tap("fast", h)
        return self.head(self.norm_out(h)), {}  # (B, T, V)
