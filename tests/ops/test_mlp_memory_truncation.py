"""Truncated backprop through the MLP memory's state (`grad_chunks`): the values are those of the
full graph, the chunk-parallel path equals the token reference in value and gradient (float64),
and a read's gradient reaches exactly the chunks from the last cut before it to its own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlcore.config import apply_overrides, preset
from nlcore.models import build_model
from nlcore.ops.mlp_memory import mlp_memory

B, H, d, h, C = 2, 2, 4, 8, 3


def inputs(T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (F.normalize(torch.randn(B, H, T, d, generator=g, dtype=torch.float64), dim=-1) for _ in range(3))
    eta, alpha, beta = (torch.rand(B, H, T, generator=g, dtype=torch.float64) for _ in range(3))
    W1 = torch.randn(B, H, h, d, generator=g, dtype=torch.float64) / 2
    W2 = torch.randn(B, H, d, h, generator=g, dtype=torch.float64) / 2
    anchor = (torch.randn(H, h, d, generator=g, dtype=torch.float64) / 2, torch.randn(H, d, h, generator=g,
                                                                                     dtype=torch.float64) / 2)
    return dict(q=q, k=k, v=v, eta=eta * 0.8, alpha=0.5 + alpha / 2, beta=beta, W1=W1, W2=W2), anchor


def leaves(x: dict, anchor):
    x = {n: t.clone().requires_grad_() for n, t in x.items()}
    return x, tuple(a.clone().requires_grad_() for a in anchor)


def run(x, anchor, **kw):
    y, (W1, W2), S = mlp_memory(x["q"], x["k"], x["v"], x["eta"], x["alpha"], x["beta"], x["W1"], x["W2"],
                                chunk=C, anchor=anchor, **kw)
    return y, W1, W2, *S


# the memories the registered Titans MLP configurations run: plain, with the normalised write and the cap
KINDS = {"plain": {}, "normalised_capped": dict(normalize=True, bound=torch.tensor(0.7, dtype=torch.float64))}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_chunk_path_equals_the_token_reference_in_value_and_gradient(kind, k):
    x0, a0 = inputs(T=16)  # 6 chunks, the last one short
    weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
               for i, o in enumerate(run(x0, a0))]  # a random linear loss on every output
    grads = {}
    for impl in ("token", "chunk"):
        x, a = leaves(x0, a0)
        outs = run(x, a, impl=impl, grad_chunks=k, **KINDS[kind])
        loss = sum((w * o).sum() for w, o in zip(weights, outs))
        grads[impl] = [t.detach() for t in outs] + list(torch.autograd.grad(loss, [*x.values(), *a]))
    for r, c in zip(grads["token"], grads["chunk"]):
        assert torch.allclose(r, c, atol=1e-11, rtol=1e-9), (r - c).abs().max()


@pytest.mark.parametrize("impl", ["token", "chunk"])
def test_values_are_the_full_graphs_and_a_truncation_beyond_the_window_changes_nothing(impl):
    x0, a0 = inputs(T=16)
    x, a = leaves(x0, a0)
    full = run(x, a, impl=impl, **KINDS["normalised_capped"])
    g_full = torch.autograd.grad(full[0].square().sum(), [*x.values(), *a])
    for k, same_grad in ((1, False), (2, False), (6, True), (9, True)):  # 6 chunks: a cut needs n % k == 0, n in 1..5
        x, a = leaves(x0, a0)
        outs = run(x, a, impl=impl, grad_chunks=k, **KINDS["normalised_capped"])
        assert all(torch.equal(o.detach(), f.detach()) for o, f in zip(outs, full))  # the forward values
        g = torch.autograd.grad(outs[0].square().sum(), [*x.values(), *a])
        assert all(torch.equal(gi, gf) for gi, gf in zip(g, g_full)) == same_grad, k


@pytest.mark.parametrize("impl", ["token", "chunk"])
@pytest.mark.parametrize("k, n, first", [(1, 4, 3), (2, 4, 2), (2, 5, 4), (3, 4, 3), (3, 2, 0), (0, 5, 0)])
def test_a_reads_gradient_reaches_the_chunks_from_the_last_cut_before_it(impl, k, n, first):
    """The reads of chunk n see its start state, the end of chunk n − 1's write; a write that starts
    from the state detached (chunk c > 0 with c % k == 0) passes no gradient further back. So the
    keys of chunks first..n (first: the last cut at or before n − 1, else 0) get a gradient from
    chunk n's reads, the earlier ones none."""
    x0, a0 = inputs(T=6 * C)
    x, a = leaves(x0, a0)
    y = run(x, a, impl=impl, grad_chunks=k, **KINDS["normalised_capped"])[0]
    (gk,) = torch.autograd.grad(y[:, :, n * C:(n + 1) * C].sum(), [x["k"]])
    per_chunk = gk.abs().sum((0, 1, 3)).unflatten(0, (6, C)).sum(1)  # (chunks,)
    assert (per_chunk[:first] == 0).all() and (per_chunk[first:n + 1] > 0).all(), per_chunk
    assert (per_chunk[n + 1:] == 0).all()  # causal: nothing from later chunks


@pytest.mark.parametrize("bad", [-1, 1.0, True, "2"])
def test_grad_chunks_must_be_a_non_negative_int(bad):
    x, a = inputs(T=6)
    with pytest.raises(ValueError, match="grad_chunks must be an int >= 0"):
        run(x, a, grad_chunks=bad)


def test_the_model_key_truncates_titans_mlp_memory_only():
    cfg = apply_overrides(preset("seed"), ["model.kind=titans", "model.d_model=16", "model.n_heads=2",
                                           "model.n_layers=2", "model.d_ff=32", "model.mem_chunk=4",
                                           "model.mem_retention=init", "model.mem_normalize=true",
                                           "model.mem_state_max=0.5"])
    torch.manual_seed(0)
    full = build_model(cfg.model, vocab_size=11).double()
    cut = build_model(apply_overrides(cfg, ["model.mem_grad_chunks=1"]).model, vocab_size=11).double()
    cut.load_state_dict(full.state_dict())
    assert all(m.grad_chunks == 1 for m in cut.mems)
    x = torch.randint(0, 11, (2, 24), generator=torch.Generator().manual_seed(0))
    outs = [model(x, model.init_state(2))[0] for model in (full, cut)]
    assert torch.equal(outs[0], outs[1])  # the same logits
    grads = [torch.autograd.grad(o.logsumexp(-1).sum(), m.mems[0].W1_init)[0] for o, m in zip(outs, (full, cut))]
    assert not torch.allclose(grads[0], grads[1])  # a shorter backward pass
    for bad, field in ((["model.mem_grad_chunks=-2"], "must be an int >= 0"),
                       (["model.memory=linear", "model.mem_grad_chunks=2"], "applies to the Titans MLP memory only")):
        with pytest.raises(ValueError, match=f"model.mem_grad_chunks: {field}"):
            apply_overrides(cfg, bad)
