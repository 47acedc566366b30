"""The surprise objective: the one-pass hooks give the reference's parameter gradients exactly."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from nlcore.config import SurpriseConfig, apply_overrides, preset
from nlcore.models import LSTMLM, NestedLSTM
from nlcore.surprise import Surprise
from nlcore.training.trainer import Trainer

V, D, DFF, B, T = 13, 8, 12, 3, 7
WEIGHTS = [{"fast": 0.3}, {"medium": 0.4}, {"slow": 0.5},
           {"fast": 0.3, "medium": 0.2}, {"fast": 0.3, "medium": 0.2, "slow": 0.1}]


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def make_model(norm_residual=True, seed=0, cls=NestedLSTM):
    torch.manual_seed(seed)
    return cls(V, D, DFF, norm_residual=norm_residual, zero_init_ffn_out=False)


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)


def lm_loss(model, x, y):
    logits, _ = model(x, model.init_state(B))
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


def train_pass(model, sur, step, x, y):
    """One trainer-style step without the optimizer: gradients accumulate in .grad."""
    if sur is not None:
        sur.begin(step)
    loss = lm_loss(model, x, y)
    (sur.total_loss(loss) if sur is not None else loss).backward()
    if sur is not None:
        sur.end()


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def run(impl, weights, clip=10.0, nr=True, steps=((1, 1),), cls=Surprise, **kw):
    model = make_model(nr)
    sur = cls(SurpriseConfig(weights=weights, clip=clip, impl=impl, **kw), model)
    for step, seed in steps:
        train_pass(model, sur, step, *batch(seed))
    return grads(model), sur.drain_metrics()


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def assert_metrics_close(a, b, rel=1e-12):
    assert a.keys() == b.keys()
    for lv in a:
        for k, v in a[lv].items():
            assert v == pytest.approx(b[lv][k], rel=rel, abs=1e-15), (lv, k)


@pytest.mark.parametrize("nr", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("clip", [3e-4, 1e6], ids=["clipped", "unclipped"])
@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda w: "+".join(w))
def test_fast_equals_reference(f64, nr, clip, weights):
    gf, mf = run("hooks", weights, clip, nr)
    gr, mr = run("reference", weights, clip, nr)
    assert max_diff(gf, gr) < 1e-10
    assert_metrics_close(mf, mr)
    if clip < 1:
        assert all(m["clip_frac"] > 0.3 for m in mf.values())  # the clip bites
    else:
        assert all(m["clip_frac"] == 0.0 for m in mf.values())
    plain = make_model(nr)
    train_pass(plain, None, 1, *batch())
    assert max_diff(gf, grads(plain)) > 1e-4  # the objective changes the gradients


class Naive(Surprise):
    """Negative control: skips the correction, i.e. clips the gradient as it arrives."""

    def _upstream(self, name):
        return []


@pytest.mark.parametrize("nr", [True, False], ids=["residual", "plain"])
def test_without_the_correction_multi_level_is_wrong(f64, nr):
    w = {"fast": 0.3, "medium": 0.2, "slow": 0.1}
    gr, _ = run("reference", w, 1e6, nr)
    gn, _ = run("hooks", w, 1e6, nr, cls=Naive)
    assert max_diff(gn, gr) > 1e-6  # the test above would catch a missing correction


def test_local_vjp_never_reaches_the_lstm(f64):
    model = make_model()
    calls = []

    def count(module, inputs, out):
        out.register_hook(lambda g: calls.append(1))

    model.embed.register_forward_hook(count)
    sur = Surprise(SurpriseConfig(weights={"fast": 0.3, "medium": 0.2, "slow": 0.1}), model)
    train_pass(model, sur, 1, *batch())
    assert len(calls) == 1  # only the main backward went through the LSTM to the embedding


def test_zero_weights_equal_plain_training(f64):
    model = make_model()
    sur = Surprise(SurpriseConfig(weights={"fast": 0.0, "medium": 0.0}, impl="hooks"), model)
    sur.begin(1)
    assert model.tap_fn is None
    sur.end()
    train_pass(model, sur, 1, *batch())
    plain = make_model()
    train_pass(plain, None, 1, *batch())
    g, p = grads(model), grads(plain)
    assert all(torch.equal(g[k], p[k]) for k in p) and g.keys() == p.keys()
    assert sur.drain_metrics() == {}


@pytest.mark.parametrize("impl", ["hooks", "reference"])
def test_every_n_skips_other_steps(f64, impl):
    w = {"fast": 0.3, "medium": 0.2}
    model = make_model()
    sur = Surprise(SurpriseConfig(weights=w, impl=impl, every=2), model)
    sur.begin(1)
    assert model.tap_fn is None
    sur.end()
    train_pass(model, sur, 1, *batch())
    plain = make_model()
    train_pass(plain, None, 1, *batch())
    assert max_diff(grads(model), grads(plain)) == 0.0
    assert sur.drain_metrics() == {}
    sur.begin(2)
    assert model.tap_fn is not None
    sur.end()
    assert model.tap_fn is None
    g2, m2 = run(impl, w, every=2, steps=((2, 1),))
    g1, m1 = run(impl, w, every=1, steps=((1, 1),))
    assert max_diff(g2, g1) == 0.0 and m2 == m1


@pytest.mark.parametrize("impl", ["hooks", "reference"])
def test_metrics_equal_hand_computation(f64, impl):
    lam, clip = {"fast": 0.3, "medium": 0.2}, 2e-3
    expect = {n: [] for n in lam}
    for seed in (1, 2):  # by hand, straight from the definition
        model = make_model()
        ys = {}
        model.tap_fn = lambda n, y, ys=ys: ys.setdefault(n, y.view_as(y))
        loss = lm_loss(model, *batch(seed))
        for n in lam:
            (g,) = torch.autograd.grad(loss, ys[n], retain_graph=True)
            t = g.clamp(-clip, clip)
            expect[n].append([lam[n] * ((ys[n] - t) ** 2).mean().item(), g.norm().item(),
                              (g.abs() > clip).double().mean().item()])
    model = make_model()
    sur = Surprise(SurpriseConfig(weights=lam, clip=clip, impl=impl), model)
    for step, seed in ((1, 1), (2, 2)):
        train_pass(model, sur, step, *batch(seed))
        model.zero_grad()
    got = sur.drain_metrics()
    for n in lam:
        for i, key in enumerate(("aux_loss", "signal_norm", "clip_frac")):
            assert got[n][key] == pytest.approx((expect[n][0][i] + expect[n][1][i]) / 2, rel=1e-12)
        assert got[n]["steps"] == 2
    assert 0 < got["fast"]["clip_frac"] < 1
    assert sur.drain_metrics() == {}  # drained


@pytest.mark.parametrize("impl", ["hooks", "reference"])
def test_gradients_accumulate_over_two_backward_passes(f64, impl):
    w = {"fast": 0.3, "medium": 0.2}
    both, _ = run(impl, w, 1e-2, steps=((1, 1), (2, 2)))  # a CMS chunk of 2: .grad sums
    g1, _ = run(impl, w, 1e-2, steps=((1, 1),))
    g2, _ = run(impl, w, 1e-2, steps=((1, 2),))
    assert max_diff(both, {k: g1[k] + g2[k] for k in g1}) < 1e-12
    ref, _ = run("reference", w, 1e-2, steps=((1, 1), (2, 2)))
    assert max_diff(both, ref) < 1e-10


def test_reference_without_create_graph_gives_the_same_gradients(f64):
    w = {"fast": 0.3, "medium": 0.2}
    model = make_model()
    sur = Surprise(SurpriseConfig(weights=w, impl="reference"), model, create_graph=False)
    train_pass(model, sur, 1, *batch())
    gr, _ = run("reference", w)
    assert max_diff(grads(model), gr) < 1e-12


@pytest.mark.parametrize("impl", ["hooks", "reference"])
def test_a_level_the_model_never_taps_raises(f64, impl):
    model = LSTMLM(V, D)
    sur = Surprise(SurpriseConfig(weights={"fast": 0.1, "medium": 0.1}, impl=impl), model)
    sur.begin(1)
    loss = lm_loss(model, *batch())
    with pytest.raises(ValueError, match=r"surprise\.weights\.medium"):
        sur.total_loss(loss)
    assert model.tap_fn is None  # the failed step left the model clean


def test_bf16_autocast_hooks_keep_the_incoming_dtype():
    w = {"fast": 5.0, "medium": 3.0}  # large weights: the auxiliary gradient matters
    out = {}
    for impl in ("hooks", "reference"):
        model = make_model()
        sur = Surprise(SurpriseConfig(weights=w, impl=impl), model)
        sur.begin(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, _ = model(batch()[0], model.init_state(B))
        # an FFN level's output is bf16 under autocast (the LSTM's, "fast", depends on the CPU build)
        assert sur._ys["medium"].dtype == torch.bfloat16
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch()[1].flatten())
        sur.total_loss(loss).backward()
        sur.end()
        out[impl] = grads(model)
    for k, g in out["reference"].items():
        assert out["hooks"][k].dtype == torch.float32
        assert (out["hooks"][k] - g).norm() <= 3e-2 * g.norm() + 1e-6, k


SMALL = ["data.synth_chars=20000", "data.batch_size=4", "data.seq_len=16", "eval_every=0", "ckpt_every=0"]


def test_trainer_writes_surprise_metrics(tmp_out):
    cfg = apply_overrides(preset("smoke"), SMALL + ["surprise.weights.fast=0.05", "steps=8", "log_every=4"])
    Trainer(cfg, tmp_out, progress=False).run()
    lines = [json.loads(x) for x in (tmp_out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [4, 8]
    for r in lines:
        m = r["surprise"]["fast"]
        assert m["steps"] == 1 and m["aux_loss"] > 0  # sampled once per log interval and m["signal_norm"] > 0 and 0 <= m["clip_frac"] <= 1


def test_trainer_fast_equals_reference_under_cms():
    out = {}
    for impl in ("hooks", "reference"):  # smoke CMS chunks 1/4/16: medium accumulates 4 gradients
        cfg = apply_overrides(preset("smoke"), SMALL + ["surprise.weights.fast=0.5", "surprise.weights.medium=0.5",
                                                        f"surprise.impl={impl}", "steps=8"])
        t = Trainer(cfg, None, progress=False)
        for s in range(1, 9):
            t.train_step(s)
        out[impl] = {k: v.detach().clone() for k, v in t.model.state_dict().items()}
        assert t.cms.updates["medium"] == 2
    for k, v in out["reference"].items():
        assert torch.allclose(out["hooks"][k], v, rtol=1e-4, atol=1e-6), k
