"""DeltaRule / DeepMomentum: updates equal closed forms built from independently captured
(x, ∇_yL); CMS chunks; checkpoint round trips; validation (float64)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nlcore.optim.delta_rule import DeepMomentum, DeltaRule

F64 = torch.float64


def _model(seed=0, inplace=False):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(inplace=inplace), nn.Linear(5, 3)).double()


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, 4, generator=g, dtype=F64),  # (B, T, d_in)
            torch.randn(2, 3, 3, generator=g, dtype=F64))  # targets (B, T, d_out)


def _loss(y, t):
    return F.mse_loss(y, t)


def _reference(model, x, t):
    """Layer inputs and ∇_yL computed functionally (no module call, so no optimizer hook),
    plus ∇_W L for every parameter."""
    l1, l2 = model[0], model[2]
    y1 = F.linear(x, l1.weight, l1.bias)  # (B, T, 5)
    a = F.relu(y1)
    y2 = F.linear(a, l2.weight, l2.bias)  # (B, T, 3)
    loss = _loss(y2, t)
    g1, g2, *gp = torch.autograd.grad(loss, [y1, y2, l1.weight, l1.bias, l2.weight, l2.bias])
    rec = [(x.detach().reshape(-1, 4), g1.reshape(-1, 5)), (a.detach().reshape(-1, 5),
                                                           g2.reshape(-1, 3))]
    return rec, gp


def _closed_summed(W, X, G, lr):
    """W − lr/N Σ_n [(W x̂_n) x̂_nᵀ + g_n x̂_nᵀ], written out token by token."""
    out = W.clone()
    for x, g in zip(X, G):
        xh = x / x.norm()
        out -= lr / len(X) * (torch.outer(W @ xh, xh) + torch.outer(g, xh))
    return out


def _closed_sequential(W, X, G, lr):
    for x, g in zip(X, G):
        xh = x / x.norm()
        W = W - lr / len(X) * (torch.outer(W @ xh, xh) + torch.outer(g, xh))
    return W


def _run(model, opt, batches):
    for x, t in batches:
        _loss(model(x), t).backward()


@pytest.mark.parametrize("mode", ["summed", "sequential", "batch_mean"])
@pytest.mark.parametrize("chunk", [1, 2])
def test_update_equals_closed_form(mode, chunk):
    model = _model()
    W0 = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    b0 = [model[0].bias.detach().clone(), model[2].bias.detach().clone()]
    batches = [_batch(s) for s in range(chunk)]
    recs = [_reference(model, x, t) for x, t in batches]  # all at the frozen W_t
    opt = DeltaRule(model.parameters(), modules={"net": model}, lr=0.5, mode=mode,
                    fallback="sgd", fallback_lr=0.1)
    assert opt.delta_param_names == ["net.0", "net.2"]
    _run(model, opt, batches)  # grads accumulate over the chunk; W frozen until step()
    assert opt.pending_tokens == {"net.0": 6 * chunk, "net.2": 6 * chunk}
    opt.step()
    for layer, (li, W) in enumerate(zip((0, 2), W0)):
        X = torch.cat([r[0][layer][0] for r in recs])  # union of the chunk's tokens (N, d_in)
        G = torch.cat([r[0][layer][1] for r in recs])  # (N, d_out)
        if mode == "summed":
            ref = _closed_summed(W, X, G, 0.5)
        elif mode == "sequential":
            ref = _closed_sequential(W, X, G, 0.5)
        else:
            xb = X.mean(0) / X.mean(0).norm()
            gw = sum(r[1][2 * layer] for r in recs)  # ∇_W L summed over the chunk
            ref = W - 0.5 * torch.outer(W @ xb, xb) - 0.5 * gw
        assert torch.allclose(model[li].weight, ref, atol=1e-12, rtol=0)
        gb = sum(r[1][2 * layer + 1] for r in recs)  # bias: SGD fallback on .grad
        assert torch.allclose(model[li].bias, b0[layer] - 0.1 * gb, atol=1e-12)
    assert opt.pending_tokens == {"net.0": 0, "net.2": 0}
    opt.remove_hooks()


def test_sum_aggregation_and_decay_lr():
    model = _model()
    W = model[2].weight.detach().clone()
    x, t = _batch(0)
    (rec, _) = _reference(model, x, t)
    X, G = rec[1]
    opt = DeltaRule([model[2].weight], modules={"head": model[2]}, lr=0.01, decay_lr=0.02,
                    aggregation="sum")
    _run(model, opt, [(x, t)])
    opt.step()
    Xh = X / X.norm(dim=1, keepdim=True)
    ref = W - 0.02 * W @ (Xh.T @ Xh) - 0.01 * G.T @ Xh
    assert torch.allclose(model[2].weight, ref, atol=1e-12)
    assert model[0].weight.grad is not None  # not in params: untouched, no fallback
    opt.remove_hooks()


def test_inplace_activation_after_linear_records_pre_activation_gradient():
    model = _model(inplace=True)
    W = model[0].weight.detach().clone()
    x, t = _batch(0)
    rec, _ = _reference(model, x, t)
    opt = DeltaRule([model[0].weight], modules={"m": model}, lr=0.3)
    _run(model, opt, [(x, t)])
    opt.step()
    assert torch.allclose(model[0].weight, _closed_summed(W, *rec[0], 0.3), atol=1e-12)
    opt.remove_hooks()


@pytest.mark.parametrize("kind", ["classic", "delta"])
def test_momentum_closed_form(kind):
    model = _model()
    opt = DeltaRule([model[2].weight], modules={"m": model}, lr=0.5, momentum=0.9,
                    momentum_kind=kind)
    m = torch.zeros(3, 5, dtype=F64)
    for s in range(3):
        W = model[2].weight.detach().clone()
        x, t = _batch(s)
        rec, _ = _reference(model, x, t)
        delta = _closed_summed(W, *rec[1], 0.5) - W  # Δ of this step
        if kind == "classic":
            m = 0.9 * m + delta
        else:
            dh = delta / delta.norm()
            m = 0.9 * (m - (m * dh).sum() * dh) + delta
        _run(model, opt, [(x, t)])
        opt.zero_grad()
        opt.step()
        assert torch.allclose(model[2].weight, W + m, atol=1e-12)
    opt.remove_hooks()


@pytest.mark.parametrize("mode", ["summed", "sequential", "batch_mean"])
def test_state_dict_round_trip_mid_chunk_is_bit_identical(mode):
    model = _model()
    opt = DeltaRule(model.parameters(), modules={"m": model}, lr=0.4, mode=mode, momentum=0.5,
                    fallback="adam", fallback_lr=1e-2)
    _run(model, opt, [_batch(0)])
    opt.step()  # momentum and Adam state exist
    opt.zero_grad()
    _run(model, opt, [_batch(1)])  # half a chunk pending
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)  # the checkpoint is plain tensors and containers

    model2 = _model(seed=123)
    model2.load_state_dict(ck["model"])
    for p, q in zip(model.parameters(), model2.parameters()):  # .grad is part of a mid-chunk run
        q.grad = p.grad.clone()
    opt2 = DeltaRule(model2.parameters(), modules={"m": model2}, lr=0.4, mode=mode,
                     momentum=0.5, fallback="adam", fallback_lr=1e-2)
    opt2.load_state_dict(ck["opt"])
    assert opt2.pending_tokens == opt.pending_tokens
    for mdl, o in ((model, opt), (model2, opt2)):
        _run(mdl, o, [_batch(2)])
        o.step()
        o.zero_grad()
        _run(mdl, o, [_batch(3)])
        o.step()
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    opt.remove_hooks()
    opt2.remove_hooks()


def test_remove_hooks_stops_recording_and_leaves_no_hook():
    model = _model()
    opt = DeltaRule(model.parameters(), modules={"m": model, "again": model[0]}, lr=0.1)
    assert len(model[0]._forward_hooks) == 1  # the same Linear reached twice: one hook
    opt.remove_hooks()
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    _run(model, opt, [_batch(0)])
    assert set(opt.pending_tokens.values()) == {0}
    with torch.no_grad():  # no grad, no record
        model(_batch(0)[0])


def test_bf16_autocast_statistics_stay_float32():
    model = _model().float()
    opt = DeltaRule(model.parameters(), modules={"m": model}, lr=0.1)
    x, t = _batch(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = _loss(model(x.float()), t.float())
    loss.backward()
    slot = opt._slots[id(model[0].weight)]
    assert slot["A"].dtype == torch.float32 and slot["B"].dtype == torch.float32
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    opt.remove_hooks()


def test_sequential_memory_cap():
    model = _model()
    opt = DeltaRule(model.parameters(), modules={"m": model}, lr=0.1, mode="sequential",
                    max_record_bytes=100)
    with pytest.raises(RuntimeError, match="max_record_bytes"):
        _run(model, opt, [_batch(0)])
    opt.remove_hooks()


@pytest.mark.parametrize("field,value", [
    ("lr", -1.0), ("lr", 0.0), ("mode", "exact"), ("aggregation", "median"),
    ("fallback", "lion"), ("fallback_lr", -0.1), ("momentum", 1.0), ("momentum", -0.1),
    ("momentum_kind", "nesterov"), ("decay_lr", -1.0), ("eps", 0.0), ("max_record_bytes", 0)])
def test_invalid_hyper_parameters_name_the_field(field, value):
    model = _model()
    kw = dict(modules={"m": model}, lr=0.1)
    kw[field] = value
    with pytest.raises(ValueError, match=f"^{field} must"):
        DeltaRule(model.parameters(), **kw)
    with pytest.raises(ValueError, match="^modules must"):
        DeltaRule(model.parameters(), modules={}, lr=0.1)


# ------------------------------------------------------------------------ DeepMomentum
def _quadratic(seed=0, n=20):
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 0, n, dtype=torch.float32)  # curvatures in [0.1, 1]
    target = torch.randn(n, generator=g)
    return scales, target


def _train(opt_fn, steps=60):
    scales, target = _quadratic()
    w = nn.Parameter(torch.zeros_like(target))
    opt = opt_fn([w])
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * (scales * (w - target) ** 2).sum()
        loss.backward()
        opt.step()
    return (0.5 * (scales * (w - target) ** 2).sum()).item(), w, opt


def test_deep_momentum_without_meta_learning_is_sgd():
    l_dm, w_dm, _ = _train(lambda p: DeepMomentum(p, lr=0.05, meta_lr=0.0), steps=10)
    l_sgd, w_sgd, _ = _train(lambda p: torch.optim.SGD(p, lr=0.05), steps=10)
    assert torch.allclose(w_dm, w_sgd, atol=1e-6)


def test_deep_momentum_learns_to_step_further_than_sgd():
    """With a too-small lr, the learned map grows the step (hypergradient) and beats SGD."""
    l_dm, _, opt = _train(lambda p: DeepMomentum(p, lr=0.05, meta_lr=0.5))
    l_sgd, _, _ = _train(lambda p: torch.optim.SGD(p, lr=0.05))
    assert DeepMomentum.EXPLORATORY
    assert l_dm < 0.8 * l_sgd
    assert opt.state[opt.param_groups[0]["params"][0]]["phi"][2].abs().sum() > 0  # w₂ moved


def test_deep_momentum_state_dict_round_trip():
    _, w, opt = _train(lambda p: DeepMomentum(p, lr=0.05, meta_lr=0.5), steps=5)
    w2 = nn.Parameter(w.detach().clone())
    opt2 = DeepMomentum([w2], lr=0.05, meta_lr=0.5)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    scales, target = _quadratic()
    for p, o in ((w, opt), (w2, opt2)):
        for _ in range(3):
            o.zero_grad()
            (0.5 * (scales * (p - target) ** 2).sum()).backward()
            o.step()
    assert torch.equal(w, w2)


@pytest.mark.parametrize("field,value", [("lr", 0.0), ("meta_lr", -1.0), ("hidden", 0),
                                         ("alpha", 0.0), ("alpha", 1.5)])
def test_deep_momentum_validation(field, value):
    kw = dict(lr=0.1)
    kw[field] = value
    with pytest.raises(ValueError, match=f"^{field} must"):
        DeepMomentum([nn.Parameter(torch.zeros(2))], **kw)


def test_per_token_grad_scale_uses_each_tokens_own_loss_gradient():
    """grad_scale='per_token': g_n = N ∇_{y_n} L for a token-mean loss over N = B·T tokens."""
    model = _model(3)
    ref = copy.deepcopy(model)
    x, t = _batch(5)
    rec, _ = _reference(ref, x, t)
    opt = DeltaRule(list(model[2].parameters()), modules={"out": model[2]}, lr=0.3,
                    grad_scale="per_token", fallback="sgd")
    _loss(model(x), t).backward()
    opt.step()
    X, G = rec[1]
    expect = _closed_summed(ref[2].weight.detach(), X, G * len(X), 0.3)
    torch.testing.assert_close(model[2].weight.detach(), expect, rtol=0, atol=1e-12)
