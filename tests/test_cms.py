"""CMS schedule against its definition (nested-learning Eq. 31), float64 where exactness matters."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nlcore.cms import CMS, NonFiniteError
from nlcore.config import CMSConfig, LevelConfig
from nlcore.models import NestedLSTM


class TwoLevel(nn.Module):
    """y = W2 tanh(W1 x): W1 is the fast level, W2 the slow one."""

    def __init__(self, d=5, dtype=torch.float64):
        super().__init__()
        self.fast = nn.Linear(d, d, dtype=dtype)
        self.slow = nn.Linear(d, 1, dtype=dtype)

    def forward(self, x):
        return self.slow(torch.tanh(self.fast(x)))

    def levels(self):
        return {"fast": list(self.fast.named_parameters(prefix="fast")),
                "slow": list(self.slow.named_parameters(prefix="slow"))}


def batches(n, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(7, d, generator=g, dtype=torch.float64), torch.randn(7, 1, generator=g, dtype=torch.float64))
            for _ in range(n)]


def loss_fn(model, x, y):
    return ((model(x) - y) ** 2).mean()


def cms_for(model, chunks, optimizer="sgd", lr=0.1, aggregation="sum", **kw):
    levels = tuple(LevelConfig(n, chunk=c, optimizer=optimizer, lr=lr) for n, c in chunks.items())
    return CMS(CMSConfig(levels=levels, aggregation=aggregation, grad_clip=0.0, **kw), model.levels(), model=model)


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_slow_level_equals_one_sgd_step_on_chunk_gradients(aggregation):
    torch.manual_seed(0)
    C, steps, lr = 4, 8, 0.1
    model = TwoLevel()
    ref = TwoLevel()
    ref.load_state_dict(model.state_dict())
    cms = cms_for(model, {"fast": 1, "slow": C}, aggregation=aggregation, lr=lr)
    data = batches(steps)
    for i, (x, y) in enumerate(data, start=1):
        loss_fn(model, x, y).backward()
        cms.after_backward(i)
    # reference: explicit simulation of Eq. 31 with autograd.grad at the current parameters
    acc = [torch.zeros_like(p) for p in ref.slow.parameters()]
    for i, (x, y) in enumerate(data, start=1):
        gf = torch.autograd.grad(loss_fn(ref, x, y), list(ref.fast.parameters()) + list(ref.slow.parameters()))
        nf = len(list(ref.fast.parameters()))
        with torch.no_grad():
            for p, g in zip(ref.fast.parameters(), gf[:nf]):
                p -= lr * g  # the fast level steps every time
            for a, g in zip(acc, gf[nf:]):
                a += g  # the slow level only accumulates, at its frozen chunk-start value
            if i % C == 0:
                scale = 1.0 if aggregation == "sum" else 1.0 / C
                for p, a in zip(ref.slow.parameters(), acc):
                    p -= lr * scale * a
                    a.zero_()
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-13, msg=n)


def test_slow_only_level_is_sum_of_gradients_at_chunk_start():
    torch.manual_seed(1)
    C, lr = 5, 0.05
    model = TwoLevel()
    theta0 = [p.detach().clone() for p in model.slow.parameters()]
    data = batches(C, seed=3)
    expected = [torch.zeros_like(p) for p in theta0]
    for x, y in data:  # gradients at the chunk-start parameters (nothing moves: fast lr 0)
        gs = torch.autograd.grad(loss_fn(model, x, y), list(model.slow.parameters()))
        for e, g in zip(expected, gs):
            e += g
    levels = (LevelConfig("fast", chunk=1, optimizer="sgd", lr=0.0), LevelConfig("slow", chunk=C, optimizer="sgd", lr=lr))
    cms = CMS(CMSConfig(levels=levels, aggregation="sum", grad_clip=0.0), model.levels(), model=model)
    for i, (x, y) in enumerate(data, start=1):
        loss_fn(model, x, y).backward()
        cms.after_backward(i)
        if i < C:  # nothing touches the slow level inside the chunk
            for p, t in zip(model.slow.parameters(), theta0):
                assert torch.equal(p, t)
    for p, t, e in zip(model.slow.parameters(), theta0, expected):
        torch.testing.assert_close(p, t - lr * e, rtol=0, atol=1e-14)


def test_all_chunks_one_is_bit_identical_to_plain_training():
    torch.manual_seed(0)
    m1 = NestedLSTM(11, 16, 24)
    m2 = NestedLSTM(11, 16, 24)
    m2.load_state_dict(m1.state_dict())
    levels = tuple(LevelConfig(n, chunk=1, optimizer="adamw", lr=3e-3, weight_decay=0.01) for n in ("fast", "medium", "slow"))
    cms = CMS(CMSConfig(levels=levels, grad_clip=0.0), m1.levels(), model=m1)
    opt = torch.optim.AdamW(m2.parameters(), lr=3e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    for step in range(1, 6):
        x = torch.randint(0, 11, (3, 9), generator=g)
        y = torch.randint(0, 11, (3, 9), generator=g)
        nn.functional.cross_entropy(m1(x)[0].flatten(0, 1), y.flatten()).backward()
        cms.after_backward(step)
        nn.functional.cross_entropy(m2(x)[0].flatten(0, 1), y.flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    for (n, p), q in zip(m1.named_parameters(), m2.parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("partial", ["flush", "discard"])
def test_update_counts_and_partial_chunk(partial):
    model = TwoLevel()
    cms = cms_for(model, {"fast": 3, "slow": 4}, partial=partial)
    N = 10
    for i, (x, y) in enumerate(batches(N), start=1):
        loss_fn(model, x, y).backward()
        due = cms.after_backward(i)
        assert due == [n for n, c in (("fast", 3), ("slow", 4)) if i % c == 0]
    assert cms.updates == {"fast": N // 3, "slow": N // 4}
    assert cms.last_update == {"fast": 9, "slow": 8}
    before = [p.detach().clone() for p in model.slow.parameters()]
    cms.finish(N)
    moved = any(not torch.equal(p, b) for p, b in zip(model.slow.parameters(), before))
    assert moved == (partial == "flush")
    assert cms.updates["slow"] == N // 4 + (partial == "flush")
    assert all(p.grad is None for p in model.parameters())


def test_lr_policy_divide_by_chunk():
    model = TwoLevel()
    cms = cms_for(model, {"fast": 1, "slow": 8}, lr_policy="divide_by_chunk", lr=0.4)
    assert cms.base_lr == {"fast": 0.4, "slow": 0.05}


def test_every_parameter_in_exactly_one_level():
    model = TwoLevel()
    cfg = CMSConfig(levels=(LevelConfig("fast"), LevelConfig("slow")), grad_clip=0.0)
    with pytest.raises(ValueError, match="in no level"):
        CMS(cfg, {"fast": model.levels()["fast"]}, model=model)
    both = {"fast": model.levels()["fast"] + model.levels()["slow"], "slow": model.levels()["slow"]}
    with pytest.raises(ValueError, match="two levels"):
        CMS(cfg, both, model=model)
    with pytest.raises(ValueError, match="unknown level 'medium'"):
        CMS(cfg, {**model.levels(), "medium": []}, model=model)


def test_telemetry_norms_match_definition():
    model = TwoLevel()
    cms = cms_for(model, {"fast": 1, "slow": 2}, aggregation="mean")
    data = batches(2)
    before = [p.detach().clone() for p in model.slow.parameters()]
    acc = [torch.zeros_like(p) for p in model.slow.parameters()]
    for i, (x, y) in enumerate(data, start=1):
        loss_fn(model, x, y).backward()
        for a, p in zip(acc, model.slow.parameters()):
            a.copy_(p.grad)  # .grad holds the running sum
        cms.after_backward(i)
    tele = cms.drain_telemetry()
    gnorm = math.sqrt(sum(float((a / 2).pow(2).sum()) for a in acc))
    dnorm = math.sqrt(sum(float((p.detach() - b).pow(2).sum()) for p, b in zip(model.slow.parameters(), before)))
    assert tele["slow"]["updates"] == 1 and tele["slow"]["last_update"] == 2
    assert tele["slow"]["grad_norm"] == pytest.approx(gnorm, rel=1e-12)
    assert tele["slow"]["change_norm"] == pytest.approx(dnorm, rel=1e-12)
    assert tele["slow"]["change_norm"] == pytest.approx(0.1 * gnorm, rel=1e-12)  # SGD: |dθ| = lr |g|


def test_state_dict_keeps_pending_gradients():
    torch.manual_seed(0)
    data = batches(6)
    m1 = TwoLevel()
    m2 = TwoLevel()
    m2.load_state_dict(m1.state_dict())
    c1 = cms_for(m1, {"fast": 1, "slow": 4}, optimizer="adam", lr=0.01)
    for i, (x, y) in enumerate(data[:3], start=1):
        loss_fn(m1, x, y).backward()
        c1.after_backward(i)
    sd = c1.state_dict()
    m2.load_state_dict(m1.state_dict())
    c2 = cms_for(m2, {"fast": 1, "slow": 4}, optimizer="adam", lr=0.01)
    c2.load_state_dict(sd)
    for i, (x, y) in enumerate(data[3:], start=4):
        for m, c in ((m1, c1), (m2, c2)):
            loss_fn(m, x, y).backward()
            c.after_backward(i)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)


def test_non_finite_gradient_names_step_and_level():
    model = TwoLevel()
    cms = cms_for(model, {"fast": 1, "slow": 2})
    x, y = batches(1)[0]
    loss_fn(model, x, y).backward()
    cms.after_backward(1)
    loss_fn(model, x * float("nan"), y).backward()
    cms.after_backward(2)
    with pytest.raises(NonFiniteError, match="step 2 in level 'fast'"):
        cms.drain_telemetry()
