"""Numeric precision of a step: bf16 autocast on CUDA, the loss in at least float32."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F


def loss_precision(logits: torch.Tensor) -> torch.Tensor:
    """Logits for the loss in at least float32 (bf16 -> float32; float64 stays float64)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def autocast_ctx(device: torch.device, amp: bool):
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if (amp and device.type == "cuda") \
        else nullcontext()


def fp32_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per character) of logits (B, T, V) against y (B, T), computed
    in at least float32 whatever the logits' dtype."""
    return F.cross_entropy(loss_precision(logits).flatten(0, 1), y.flatten())
