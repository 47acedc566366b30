"""The causal Transformer: causality, document masks, RoPE, levels, training with the Trainer."""

from __future__ import annotations

import math

import pytest
import torch

from nlcore.config import ModelConfig, override, preset
from nlcore.models import build_model
from nlcore.models.base import Resets
from nlcore.models.transformer import CausalTransformer, apply_rope, document_mask, rope_angles
from nlcore.training.trainer import Trainer

V = 17


def tiny(**kw) -> CausalTransformer:
    torch.manual_seed(0)
    kw = {"d_model": 16, "n_layers": 2, "n_heads": 2, "d_ff": 32, **kw}
    return CausalTransformer(V, **kw).double().eval()


def test_shapes_state_and_float64():
    m = tiny()
    x = torch.randint(0, V, (3, 9))
    logits, state = m(x, {"ignored": torch.zeros(3, 1)})
    assert logits.shape == (3, 9, V) and logits.dtype == torch.float64
    assert state == {} and m.init_state(3) == {}
    assert torch.isfinite(logits).all()


def test_causality():
    m = tiny()
    x = torch.randint(0, V, (2, 12))
    base, _ = m(x)
    for t in (0, 4, 10):
        x2 = x.clone()
        x2[:, t + 1:] = torch.randint(0, V, x2[:, t + 1:].shape)
        out, _ = m(x2)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-12)
        if t < 10:
            assert not torch.allclose(out[:, t + 1:], base[:, t + 1:])


@pytest.mark.parametrize("first", [False, True])
def test_document_reset_splits_attention(first):
    m = tiny()
    T, p = 12, 5
    x = torch.randint(0, V, (2, T))
    mask = torch.zeros(2, T, dtype=torch.bool)
    mask[0, p] = True
    mask[:, 0] = first  # a document starting at position 0 changes nothing
    out, _ = m(x, None, Resets(mask, (p,)))
    plain, _ = m(x)
    before, _ = m(x[:1, :p])  # row 0's first document as a window of its own
    after, _ = m(x[:1, p:])  # row 0's second document as a fresh window (positions from 0)
    torch.testing.assert_close(out[0, :p], before[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[0, p:], after[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[1], plain[1], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(out[0, p:], plain[0, p:])


def test_resets_without_cuts_take_the_causal_path():
    m = tiny()
    x = torch.randint(0, V, (2, 8))
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[1, 0] = True
    torch.testing.assert_close(m(x, None, Resets(mask, ()))[0], m(x)[0], rtol=0, atol=0)


def test_document_mask():
    mask = torch.tensor([[False, False, True, False], [True, False, False, False]])
    got = document_mask(Resets(mask, (2,)))[:, 0]
    want0 = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(got[0], want0)
    assert torch.equal(got[1], torch.ones(4, 4, dtype=torch.bool).tril())


def test_rope_scores_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    d_h, T = 8, 40
    cos, sin = rope_angles(T, d_h, dtype=torch.float64)
    assert cos.shape == (T, d_h // 2)
    q = torch.randn(d_h, generator=g, dtype=torch.float64).expand(T, d_h)  # the same q at every position
    k = torch.randn(d_h, generator=g, dtype=torch.float64).expand(T, d_h)
    rq, rk = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (T, d_h)
    scores = rq @ rk.T  # (T, T): scores[i, j] = R_i q . R_j k
    for i, j in ((3, 1), (7, 7), (2, 9)):
        for s in (1, 5, 20):
            torch.testing.assert_close(scores[i + s, j + s], scores[i, j], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))  # a rotation keeps norms
    torch.testing.assert_close(rq[0], q[0])  # position 0: the identity
    assert not torch.allclose(scores[5, 1], scores[5, 2])


def test_levels_cover_every_parameter_and_init():
    m = CausalTransformer(V, d_model=16, n_layers=3, n_heads=4, d_ff=32, embed_level="slow", head_level="medium")
    levels = m.levels()
    assert sum(len(v) for v in levels.values()) == len(list(m.parameters())) == len(dict(m.named_parameters()))
    assert {n for n, _ in levels["slow"]} == {"embed.weight"}
    assert {n for n, _ in levels["medium"]} == {"head.weight", "head.bias", "norm_out.weight", "norm_out.bias"}
    assert all(n.startswith("blocks.") for n, _ in levels["fast"])
    assert m.num_params() == sum(p.numel() for p in m.parameters())
    assert torch.count_nonzero(m.blocks[0].attn.qkv.bias) == 0
    with pytest.raises(KeyError):
        m.level_of("nope.weight")


@pytest.mark.parametrize("kw, arg", [({"n_heads": 3}, "n_heads"), ({"d_model": 12, "n_heads": 4}, "n_heads"),
                                     ({"dropout": 1.0}, "dropout"), ({"n_layers": 0}, "n_layers")])
def test_bad_arguments_name_the_argument(kw, arg):
    with pytest.raises(ValueError, match=arg):
        CausalTransformer(V, **{"d_model": 16, "n_heads": 2, **kw})


def test_dropout_trains_and_tap():
    m = CausalTransformer(V, d_model=16, n_layers=1, n_heads=2, d_ff=32, dropout=0.2)
    seen = []
    m.tap_fn = lambda name, y: seen.append((name, tuple(y.shape))) or y
    x = torch.randint(0, V, (2, 6))
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 3] = True
    logits, _ = m(x, None, Resets(mask, (3,)))
    logits.sum().backward()
    assert seen == [("fast", (2, 6, 16))]
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    torch.testing.assert_close(m(x)[0], m(x)[0], rtol=0, atol=0)  # no dropout in eval


@pytest.mark.parametrize("reset", ["never", "doc"])
def test_trainer_lowers_the_loss(reset):
    cfg = preset("smoke", steps=40, log_every=10, eval_every=0, ckpt_every=0, **{"state.reset": reset})
    for key, value in (("model.kind", "transformer"), ("model.n_layers", 2), ("model.n_heads", 2)):
        cfg = override(cfg, key, value)
    t = Trainer(cfg, progress=False)
    assert isinstance(t.model, CausalTransformer) and len(t.model.blocks) == 2
    s = t.run()
    losses = [r["train_loss"] for r in t.history]
    assert len(losses) == 4 and all(map(math.isfinite, losses))
    assert losses[-1] < losses[0] - 0.3, losses
    assert 0 < s["valid_bpc"] < 8


def test_build_model():
    m = build_model(ModelConfig(kind="transformer", d_model=16, n_layers=3, n_heads=4, d_ff=24,
                                embed_level="slow"), V)
    assert isinstance(m, CausalTransformer) and len(m.blocks) == 3 and m.n_heads == 4
    assert m.level_of("embed.weight") == "slow"


def test_bf16_autocast_runs():
    m = CausalTransformer(V, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    x = torch.randint(0, V, (2, 6))
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 2] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for resets in (None, Resets(mask, (2,))):
            logits, _ = m(x, None, resets)
            assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    logits.float().sum().backward()
