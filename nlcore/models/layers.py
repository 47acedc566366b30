"""Layers shared by the models."""

from __future__ import annotations

import torch
from torch import nn


class FFN(nn.Module):
    """Position-wise feed-forward block: fc2(act(fc1(u))), (B, T, d) -> (B, T, d)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        return self.drop(self.fc2(self.act(self.fc1(u))))
