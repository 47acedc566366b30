"""Titans and HOPE language models: chunk-parallel = token reference, per-row independence,
carried state = one long window, document resets, HOPE's in-forward CMS writes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from nlcore.config import ModelConfig
from nlcore.models import build_model
from nlcore.models.base import Resets

V = 13
VARIANTS = {
    "titans_mlp": dict(kind="titans", memory="mlp"),
    "titans_linear": dict(kind="titans", memory="linear"),
    "titans_nomomentum": dict(kind="titans", memory="mlp", momentum=False),
    "titans_mlp_to_init": dict(kind="titans", memory="mlp", mem_retention="init"),
    "titans_linear_to_init": dict(kind="titans", memory="linear", mem_retention="init"),
    "titans_mlp_step_cap": dict(kind="titans", memory="mlp", mem_retention="init", mem_step_max=0.01),
    "titans_mlp_normalized": dict(kind="titans", memory="mlp", mem_retention="init", mem_normalize=True,
                                  mem_step_max=0.5),
    "hope": dict(kind="hope"),
    "hope_nomomentum": dict(kind="hope", momentum=False),
    "hope_layer_teach": dict(kind="hope", cms_teach="layer"),
    "hope_outer": dict(kind="hope", cms_mode="outer"),
}


def make(name: str, dtype=torch.float64, seed: int = 0, **kw):
    base = dict(d_model=16, d_ff=24, n_layers=2, n_heads=2, mem_chunk=4, cms_chunks="8,16", cms_lr=0.05)
    cfg = ModelConfig(**{**base, **VARIANTS[name], **kw})
    torch.manual_seed(seed)
    return build_model(cfg, V, chain_levels=("medium", "slow")).to(dtype)


def run(model, x, state=None, resets=None, targets=None):
    kw = {"targets": targets} if model.uses_targets and targets is not None else {}
    return model(x, state if state is not None else model.init_state(x.shape[0]), resets, **kw)


def data(B=3, T=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T + 1), generator=g)


def randomise_state(model, B):
    """A non-trivial carried state (as after some text), so the tests exercise it."""
    g = torch.Generator().manual_seed(5)
    return {k: 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in model.init_state(B).items()}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_chunk_parallel_equals_token_reference_float64(name, solve_path):
    xy = data()
    x, y = xy[:, :-1], xy[:, 1:]
    outs = {}
    for impl in ("token", "chunk"):
        m = make(name, mem_impl=impl)
        st = randomise_state(m, x.shape[0])
        logits, new = run(m, x, st, targets=y)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten()) + sum((v * 0.3).sum() for v in new.values())
        grads = torch.autograd.grad(loss, list(m.parameters()))
        outs[impl] = (logits, new, grads)
    (l0, s0, g0), (l1, s1, g1) = outs["token"], outs["chunk"]
    assert (l0 - l1).abs().max() < 1e-10
    assert all((s0[k] - s1[k]).abs().max() < 1e-10 for k in s0)
    assert max((a - b).abs().max() for a, b in zip(g0, g1)) < 1e-10
    assert max(a.abs().max() for a in g0) > 1e-6  # the comparison is not between zeros


@pytest.mark.parametrize("name", ["titans_mlp", "titans_linear", "hope"])
def test_chunk_parallel_equals_token_reference_float32(name, solve_path):
    x = data()[:, :-1]
    a, _ = run(make(name, torch.float32, mem_impl="token"), x)
    b, _ = run(make(name, torch.float32, mem_impl="chunk"), x)
    assert (a - b).abs().max() < 1e-5


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_rows_are_independent(name):
    xy = data(B=3)
    x, y = xy[:, :-1], xy[:, 1:]
    m = make(name)
    st = randomise_state(m, 3)
    logits, new = run(m, x, st, targets=y)
    for b in range(3):
        one = {k: v[b:b + 1] for k, v in st.items()}
        lb, nb = run(m, x[b:b + 1], one, targets=y[b:b + 1])
        assert (lb - logits[b:b + 1]).abs().max() < 1e-10
        assert all((nb[k] - new[k][b:b + 1]).abs().max() < 1e-10 for k in nb)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_carried_state_equals_one_long_window(name):
    xy = data(B=2, T=32)
    x, y = xy[:, :-1], xy[:, 1:]
    m = make(name)
    long, st_long = run(m, x, targets=y)
    a, st = run(m, x[:, :16], targets=y[:, :16])
    b, st2 = run(m, x[:, 16:], st, targets=y[:, 16:])
    assert (torch.cat([a, b], 1) - long).abs().max() < 1e-10
    assert all((st2[k] - st_long[k]).abs().max() < 1e-10 for k in st_long)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_document_reset_starts_row_from_zero_state(name):
    xy = data(B=2, T=32)
    x, y = xy[:, :-1], xy[:, 1:]
    m = make(name)
    st = randomise_state(m, 2)
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[0, 16] = True  # row 0 starts a new document at 16 (a multiple of every chunk)
    logits, _ = run(m, x, st, Resets(mask, (16,)), targets=y)
    pre, _ = run(m, x[:1, :16], {k: v[:1] for k, v in st.items()}, targets=y[:1, :16])
    post, _ = run(m, x[:1, 16:], targets=y[:1, 16:])
    assert (logits[:1, :16] - pre).abs().max() < 1e-10
    assert (logits[:1, 16:] - post).abs().max() < 1e-10
    plain, _ = run(m, x, st, targets=y)
    assert (logits[1] - plain[1]).abs().max() < 1e-10  # row 1 has no document start


def test_hope_in_forward_write_is_minus_lr_times_chunk_gradient():
    """With one level of chunk T the window ends with one write D <- D - lr * grad_D sum_t CE_t;
    check it against central finite differences of the summed loss (no writes: lr = 0)."""
    torch.manual_seed(0)
    lr = 0.05
    m = make("hope", cms_chunks="16", n_layers=1, cms_lr=lr)
    m0 = make("hope", cms_chunks="16", n_layers=1, cms_lr=0.0)
    xy = data(B=1, T=16)
    x, y = xy[:, :-1], xy[:, 1:]
    st = randomise_state(m, 1)
    _, new = run(m, x, st, targets=y)
    grad = -(new["0.D1_0"] - st["0.D1_0"]) / lr  # (1, d_ff, d)
    assert grad.abs().max() > 1e-4

    @torch.no_grad()
    def loss(D1):
        logits, _ = run(m0, x, {**st, "0.D1_0": D1}, targets=y)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")

    eps = 1e-6
    for (i, j) in [(0, 0), (3, 5), (7, 11), (20, 2)]:
        e = torch.zeros_like(st["0.D1_0"])
        e[0, i, j] = eps
        fd = (loss(st["0.D1_0"] + e) - loss(st["0.D1_0"] - e)) / (2 * eps)
        assert abs(float(fd) - float(grad[0, i, j])) < 1e-6 * max(1.0, abs(float(fd)))


def test_hope_in_forward_also_writes_during_no_grad_evaluation():
    m = make("hope")
    x = data(B=2)[:, :-1]
    with torch.no_grad():
        _, new = run(m, x)
    assert new["0.D1_1"].abs().max() > 0  # the slow level (chunk 16) wrote twice in 32 tokens
    assert not new["0.D1_1"].requires_grad


def test_hope_levels_follow_the_cms_mode():
    inner = make("hope")
    assert {inner.level_of(n) for n, _ in inner.named_parameters()} == {"fast"}
    outer = make("hope_outer")
    lv = {n: outer.level_of(n) for n, _ in outer.named_parameters()}
    assert lv["chain.0.0.fc1.weight"] == "medium" and lv["chain.1.1.fc2.bias"] == "slow"
    assert lv["mems.0.Mk_init"] == "fast"


def test_hope_validation_names_the_field():
    m = make("hope")
    with pytest.raises(ValueError, match="model.cms_chunks"):
        run(m, data(T=24)[:, :-1])  # 16 does not divide 24
    with pytest.raises(ValueError, match="model.cms_chunks"):
        make("hope", cms_chunks="6,12")  # 6 is not a multiple of mem_chunk=4
    with pytest.raises(ValueError, match="model.cms_chunks"):
        make("hope", cms_mode="outer", cms_chunks="8")  # two CMS levels for one MLP
    with pytest.raises(ValueError, match="model.cms_mode"):
        ModelConfig(kind="hope", cms_mode="sometimes").validate()


@pytest.mark.parametrize("name", ["titans_mlp", "hope"])
def test_models_train_with_the_trainer(name, tmp_path):
    from nlcore.config import preset
    from nlcore.training.trainer import Trainer

    cfg = preset("smoke")
    model = dataclasses.replace(cfg.model, n_layers=1, n_heads=2, mem_chunk=8, cms_chunks="16,32",
                                **VARIANTS[name])
    levels = tuple(dataclasses.replace(lv, optimizer="adamw", lr=3e-3) for lv in cfg.cms.levels)
    cfg = dataclasses.replace(cfg, model=model, steps=30, eval_every=0, ckpt_every=0,
                              cms=dataclasses.replace(cfg.cms, levels=levels))
    tr = Trainer(cfg, tmp_path, progress=False)
    summary = tr.run()
    losses = [r["train_loss"] for r in tr.history if "train_loss" in r]
    assert losses[-1] < losses[0]
    assert summary["valid_bpc"] < 6.0


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_predictions_never_see_the_future(name):
    """Changing character p (in the inputs, and as the target of position p-1) leaves every
    prediction made before position p unchanged: the in-forward writes learn only from text
    already read, also at a chunk boundary (p = 16) and right after one (p = 17)."""
    xy = data(B=2, T=32)
    m = make(name)
    st = randomise_state(m, 2)
    base, _ = run(m, xy[:, :-1], st, targets=xy[:, 1:])
    for p in (5, 16, 17, 31):
        changed = xy.clone()
        changed[:, p] = (changed[:, p] + 1) % V
        logits, _ = run(m, changed[:, :-1], st, targets=changed[:, 1:])
        assert (logits[:, :p] - base[:, :p]).abs().max() == 0
        assert (logits[:, p:] - base[:, p:]).abs().max() > 0  # and the change does reach later ones


def test_mlp_step_max_scales_the_write_step_and_zero_means_one_over_the_chunk():
    """eta_t = step_max * sigmoid(.): 0 is the mean-sized step 1/C, another ceiling another model."""
    xy = data()
    x = xy[:, :-1]
    default = run(make("titans_mlp"), x)[0]
    explicit = run(make("titans_mlp", mem_step_max=1 / 4), x)[0]  # mem_chunk 4: the same step
    assert torch.equal(default, explicit)
    smaller = run(make("titans_mlp", mem_step_max=1 / 40), x)[0]
    assert (smaller - default).abs().max() > 1e-6
    layer = make("titans_mlp", mem_step_max=1 / 40).mems[0]
    assert layer.step_max == pytest.approx(1 / 40)
    with pytest.raises(ValueError, match="mem_step_max"):
        ModelConfig(kind="titans", mem_step_max=-1.0).validate()
