"""nlcore.ops.hope_memory.chunk: its two arrangements of the slot contractions agree. (The memory
against its token reference: tests/models/test_memory_layers.py; its loop op: test_hope_memory_loop.py.)"""

from __future__ import annotations

import torch


def test_elementwise_slot_contractions_equal_the_matmul_ones(monkeypatch):
    """hope_chunks contracts over the state slots elementwise when compiled, by matmuls in eager
    mode: both arrangements give the same values and gradients."""
    from nlcore.models.memory_layers import SelfModifyingMemory
    from nlcore.ops.hope_memory import chunk as hope_chunk

    torch.manual_seed(0)
    mem = SelfModifyingMemory(16, 2, chunk=8).double()
    st = {k: 0.1 * torch.randn(3, *s, dtype=torch.float64) for k, s in mem.state_shapes().items()}
    u = torch.randn(3, 32, 16, dtype=torch.float64)
    out = {}
    for ew in (False, True):
        monkeypatch.setattr(hope_chunk, "ELEMENTWISE", ew)
        y, new = mem(u, st, None)
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum() + sum(v.sum() for v in new.values())
        out[ew] = [y, *new.values(), *torch.autograd.grad(loss, list(mem.parameters()))]
    for a, b in zip(out[False], out[True]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
