"""HOPE's in-forward writes taught by each layer's own loss (`cms_teach="layer"`): equal to a token
by token reference in logits, carried state and every parameter's gradient; the window's outer pass
equal to the segments' graphs; with one layer the same model as the global teach; a layer's writes
independent of the layers above it, and each write minus lr times its chunk's gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlcore.config import ModelConfig
from nlcore.models import build_model
from nlcore.models.base import split_state

V = 11


def make(dtype=torch.float64, **kw):
    cfg = ModelConfig(**{**dict(kind="hope", d_model=16, d_ff=24, n_layers=2, n_heads=2, mem_chunk=4,
                                cms_chunks="8,16", cms_lr=0.3, cms_teach="layer"), **kw})
    torch.manual_seed(0)
    return build_model(cfg, V).to(dtype)


def inputs(model, B=3, T=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, V, (B, T + 1), generator=g)
    dt = next(model.parameters()).dtype
    state = {k: 0.1 * torch.randn(v.shape, generator=g, dtype=dt) for k, v in model.init_state(B).items()}
    return xy[:, :-1], xy[:, 1:], state


def step(model, x, y, state):
    """Logits, new state and every parameter's gradient of the summed next-character loss."""
    model.zero_grad(set_to_none=True)
    logits, new = model(x, state, None, targets=y)
    F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").backward()
    return logits, new, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def largest(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


def chain_at(mlps, h, offsets):
    """The chain on h (B, S, d) with per-row offsets, written out: u (W1 + D1)^T + b1, GELU, then
    a (W2 + D2)^T + b2, each level residual on its layer norm's output."""
    for mlp, (D1, D2) in zip(mlps, offsets):
        u = mlp.norm(h)
        a = F.gelu(u @ mlp.fc1.weight.T + mlp.fc1.bias + torch.einsum("bsn,bmn->bsm", u, D1))
        h = h + a @ mlp.fc2.weight.T + mlp.fc2.bias + torch.einsum("bsn,bmn->bsm", a, D2)
    return h


def reference(model, x, y, state):
    """Layer by layer and token by token: the memory through its token path, then at each position
    the chain with the layer's current offsets and that position's loss through the head; a level's
    gradients summed over its chunk and written at the chunk's end. The outer graph uses each
    position's offsets, detached."""
    B, T = x.shape
    L = len(model.chunks)
    h, new = model.embed(x), {}
    for i, (mem, norm, mlps) in enumerate(zip(model.mems, model.norm_mem, model.chain)):
        st = split_state(state, i)
        mst = {k: v for k, v in st.items() if not k.startswith("D")}
        y_mem, mst = mem(norm(h), mst, None)
        hm = h + y_mem
        D = {k: v.detach() for k, v in st.items() if k.startswith("D")}
        acc = {k: torch.zeros_like(v) for k, v in D.items()}
        outs = []
        for t in range(T):
            leaves = {k: v.clone().requires_grad_(True) for k, v in D.items()}
            pairs = [(leaves[f"D1_{j}"], leaves[f"D2_{j}"]) for j in range(L)]
            out = chain_at(mlps, hm[:, t:t + 1].detach(), pairs)
            loss = F.cross_entropy(model.head(model.norm_out(out)).flatten(0, 1), y[:, t], reduction="sum")
            for k, g in zip(leaves, torch.autograd.grad(loss, list(leaves.values()))):
                acc[k] = acc[k] + g
            outs.append(chain_at(mlps, hm[:, t:t + 1], [(D[f"D1_{j}"], D[f"D2_{j}"]) for j in range(L)]))
            for k in D:
                if (t + 1) % model.chunks[int(k.rsplit("_", 1)[1])] == 0:
                    D[k], acc[k] = D[k] - model.lr * acc[k], torch.zeros_like(acc[k])
        h = torch.cat(outs, dim=1)
        new.update({f"{i}.{k}": v for k, v in {**mst, **D}.items()})
    return model.head(model.norm_out(h)), new


def test_equals_the_token_reference_float64():
    fast, slow = make(), make(mem_impl="token")
    x, y, st = inputs(fast)
    lf, sf, gf = step(fast, x, y, st)
    slow.zero_grad(set_to_none=True)
    lr_, sr = reference(slow, x, y, st)
    F.cross_entropy(lr_.flatten(0, 1), y.flatten(), reduction="sum").backward()
    gr = {n: p.grad for n, p in slow.named_parameters() if p.grad is not None}
    assert (lf - lr_).abs().max() < 1e-10
    assert largest(sf, sr) < 1e-10
    assert largest(gf, gr) < 1e-10 * max(1.0, max(g.abs().max().item() for g in gr.values()))
    assert all(sf[f"{i}.D1_{j}"].sub(st[f"{i}.D1_{j}"]).abs().max() > 1e-4 for i in range(2) for j in range(2))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_window_pass_equals_segment_graphs(dtype, tol):
    m = make(dtype)
    x, y, st = inputs(m)
    out = {}
    for mode in ("window", "segments"):
        m.outer_pass = mode
        out[mode] = step(m, x, y, st)
    (lw, sw, gw), (ls, ss, gs) = out["window"], out["segments"]
    scale = max(g.abs().max().item() for g in gs.values())
    assert (lw - ls).abs().max() < tol * max(1.0, ls.abs().max().item())
    assert largest(sw, ss) < tol
    assert largest(gw, gs) < tol * max(1.0, scale)


def test_evaluation_writes_as_training_does():
    m = make()
    x, y, st = inputs(m)
    lt, stt, _ = step(m, x, y, st)
    with torch.no_grad():
        le, ste = m(x, st, None, targets=y)
    assert (lt - le).abs().max() < 1e-10 and largest(stt, ste) < 1e-10


@pytest.mark.parametrize("kw", [{}, {"cms_chunks": "8"}, {"momentum": False}])
def test_one_layer_is_the_global_teach(kw):
    """With one layer, the layer's own loss is the model's: both teach signals are one model."""
    x, y, st = inputs(make(n_layers=1, **kw))
    (la, sa, ga), (lb, sb, gb) = (step(make(n_layers=1, cms_teach=t, **kw), x, y, st) for t in ("layer", "global"))
    assert (la - lb).abs().max() < 1e-10 and largest(sa, sb) < 1e-10 and largest(ga, gb) < 1e-9


@pytest.mark.parametrize("teach,independent", [("layer", True), ("global", False)])
def test_a_layers_writes_ignore_the_layers_above(teach, independent):
    """Changing layer 1's chain leaves layer 0's writes bit for bit unchanged under the layer teach;
    under the global teach layer 0 learns from the model's output, so they change."""
    m = make(cms_teach=teach)
    x, y, st = inputs(m)
    with torch.no_grad():
        _, before = m(x, st, None, targets=y)
        m.chain[1][0].fc1.weight.mul_(1.5)
        _, after = m(x, st, None, targets=y)
    same0 = all(torch.equal(before[f"0.{k}"], after[f"0.{k}"]) for k in ("D1_0", "D2_0", "D1_1", "D2_1"))
    assert same0 == independent
    assert not torch.equal(before["1.D1_0"], after["1.D1_0"])


def test_a_write_is_minus_lr_times_the_layers_chunk_gradient():
    """One level with a chunk of the whole window: layer 0 ends it with D <- D - lr * grad_D of the
    summed loss of its own output through the head; checked against central finite differences."""
    lr = 0.05
    m = make(cms_chunks="16", cms_lr=lr)
    x, y, st = inputs(m, B=1, T=16)
    with torch.no_grad():
        _, new = m(x, st, None, targets=y)
    grad = -(new["0.D1_0"] - st["0.D1_0"]) / lr
    assert grad.abs().max() > 1e-4

    @torch.no_grad()
    def loss(D1):
        hm, _ = m._memory(m.mems[0], m.norm_mem[0], m.embed(x), split_state(st, 0))
        out = m._chain(m.chain[0], hm, [(D1, st["0.D2_0"])])
        return F.cross_entropy(m.head(m.norm_out(out)).flatten(0, 1), y.flatten(), reduction="sum")

    eps = 1e-6
    for i, j in [(0, 0), (3, 5), (7, 11), (20, 2)]:
        e = torch.zeros_like(st["0.D1_0"])
        e[0, i, j] = eps
        fd = (loss(st["0.D1_0"] + e) - loss(st["0.D1_0"] - e)) / (2 * eps)
        assert abs(float(fd) - float(grad[0, i, j])) < 1e-6 * max(1.0, abs(float(fd)))


def test_the_teach_signal_is_validated():
    with pytest.raises(ValueError, match="model.cms_teach"):
        ModelConfig(kind="hope", cms_teach="neighbour").validate()
    with pytest.raises(ValueError, match="model.cms_teach"):
        make(cms_teach="neighbour")
