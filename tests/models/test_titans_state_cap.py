"""Titans' MLP memory with `model.mem_state_max`: its carried distance from the initial weights is
capped at that multiple of their norm, per head."""

from __future__ import annotations

import pytest
import torch

from nlcore.config import apply_overrides, preset
from nlcore.models.titans import TitansLM


def _distances(cap: float) -> torch.Tensor:
    """Per (layer, row, head): |θ − θ_init| / |θ_init| of the state after one window."""
    torch.manual_seed(0)
    model = TitansLM(50, 32, 2, 2, 64, retention="init", normalize=True, step_max=4.0, state_max=cap, mem_chunk=8)
    x = torch.randint(0, 50, (2, 64))
    _, st = model(x, model.init_state(2, "cpu"))
    out = []
    for i, mem in enumerate(model.mems):
        init = (mem.W1_init.square().sum((-1, -2)) + mem.W2_init.square().sum((-1, -2))).sqrt()  # (H,)
        dist = (st[f"{i}.W1"].square().sum((-1, -2)) + st[f"{i}.W2"].square().sum((-1, -2))).sqrt()  # (B, H)
        out.append(dist / init)
    return torch.stack(out).detach()


def test_the_carried_memory_stays_within_its_cap():
    free, capped = _distances(0.0), _distances(0.05)
    assert (free > 0.2).all()  # these writes move every head's memory well past the cap
    assert torch.allclose(capped, torch.full_like(capped, 0.05), rtol=1e-5)  # and the cap holds them at it


def test_a_negative_cap_is_a_config_error():
    with pytest.raises(ValueError, match=r"model\.mem_state_max"):
        apply_overrides(preset("seed"), ["model.kind=titans", "model.mem_state_max=-1"])
