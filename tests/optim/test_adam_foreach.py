"""nlcore.optim.adam_foreach: Adam(W) as foreach ops equals torch's optimizers, eager and traced, and a
sliced optimizer routed through it (compile_update) steps like torch's."""

from __future__ import annotations

import pytest
import torch

from nlcore.optim.adam_foreach import adam_foreach_
from nlcore.optim.sliced import SlicedAdam, SlicedAdamW


def params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((7, 5), (300,), (3, 4, 2))]


def grads(ps, step: int) -> None:
    g = torch.Generator().manual_seed(100 + step)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g)


@pytest.mark.parametrize("decoupled", [True, False])
@pytest.mark.parametrize("backend", [None, "aot_eager"])
def test_foreach_update_equals_torch(decoupled, backend):
    wd, lrs = 0.1, (1e-2, 3e-3, 5e-3, 1e-3)  # lr changes every step, as under a schedule
    a, b = params(0), params(0)
    ref = (torch.optim.AdamW if decoupled else torch.optim.Adam)(b, lr=lrs[0], betas=(0.9, 0.95), eps=1e-8,
                                                                 weight_decay=wd, foreach=False)
    m, v = [torch.zeros_like(p) for p in a], [torch.zeros_like(p) for p in a]
    steps, lr = [torch.zeros(()) for _ in a], torch.zeros(())
    fn = adam_foreach_ if backend is None else torch.compile(adam_foreach_, backend=backend, dynamic=False)
    for t, x in enumerate(lrs):
        grads(a, t)
        grads(b, t)
        for grp in ref.param_groups:
            grp["lr"] = x
        ref.step()
        lr.fill_(x)
        with torch.no_grad():
            fn(a, [p.grad for p in a], m, v, steps, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=wd,
               decoupled=decoupled)
    for p, q, mm, vv in zip(a, b, m, v):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(mm, ref.state[q]["exp_avg"], rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(vv, ref.state[q]["exp_avg_sq"], rtol=1e-6, atol=1e-9)
    assert all(float(s) == len(lrs) for s in steps)


@pytest.mark.parametrize("cls, ref_cls", [(SlicedAdamW, torch.optim.AdamW), (SlicedAdam, torch.optim.Adam)])
def test_sliced_optimizer_routed_through_the_compiled_update(cls, ref_cls):
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    a, b = params(1), params(1)
    opt = cls(a, lr=1e-2, weight_decay=0.05, fused=True)
    opt.compile_update(lambda fn: torch.compile(fn, backend=counter, dynamic=False))
    ref = ref_cls(b, lr=1e-2, weight_decay=0.05, foreach=False)
    for t in range(4):
        grads(a, t)
        grads(b, t)
        for o in (opt, ref):
            for grp in o.param_groups:
                grp["lr"] = 1e-2 / (t + 1)
        opt.step()
        ref.step()
    assert counter.frame_count == 1  # steps 2-4 compiled once, lr changes did not recompile
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert opt.state_dict()["state"][0]["step"] == ref.state_dict()["state"][0]["step"] == 4


@pytest.mark.parametrize("max_norm", [0.05, 1e6])  # clipping on every update, and never
def test_cms_with_the_compiled_update_and_fused_clip_equals_the_plain_cms(max_norm):
    """A CMS whose Adam(W) levels step through the foreach update, the clip fused into it (the
    CUDA training path, here on CPU with the update uncompiled), against the plain CMS."""
    import copy

    from nlcore.cms import CMS
    from nlcore.config import CMSConfig, LevelConfig
    from nlcore.models import NestedLSTM

    torch.manual_seed(0)
    m = NestedLSTM(11, d_model=8, d_ff=16)
    levels = (LevelConfig("fast", chunk=1, optimizer="adamw", lr=1e-2, weight_decay=0.1),
              LevelConfig("medium", chunk=2, optimizer="adam", lr=1e-2),
              LevelConfig("slow", chunk=4, optimizer="adamw", lr=1e-2))
    cfg = CMSConfig(levels=levels, grad_clip=max_norm)
    runs = []
    for fused in (None, True):
        mm = copy.deepcopy(m)
        cms = CMS(cfg, mm.levels(), model=mm, fused=fused)
        if fused:
            for opt in cms.optimizers.values():
                opt.compile_update(lambda fn: fn)
        g = torch.Generator().manual_seed(1)
        for step in range(1, 9):
            mm(torch.randint(0, 11, (2, 5), generator=g))[0].square().mean().backward()
            cms.after_backward(step)
        runs.append((mm, cms.drain_telemetry()))
    (a, ta), (b, tb) = runs
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=5e-6), (n, (p - q).abs().max())  # 8 steps of lr 1e-2: rounding
    for lv in ta:
        assert ta[lv]["updates"] == tb[lv]["updates"] > 0
        torch.testing.assert_close(torch.tensor([v for _, v in ta[lv]["grad_norms"]]),
                                   torch.tensor([v for _, v in tb[lv]["grad_norms"]]), rtol=1e-5, atol=0)
