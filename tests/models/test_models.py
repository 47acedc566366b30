"""Models: the shared interface, level assignment, shapes, and a delta-rule CMS level."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlcore.cms import CMS
from nlcore.config import CMSConfig, LevelConfig, ModelConfig
from nlcore.models import LSTMLM, NestedLSTM, build_model


@pytest.mark.parametrize("kw", [{}, {"norm_residual": False}, {"hierarchical_state": True},
                                {"embed_level": "slow", "head_level": "medium"}])
def test_every_parameter_has_a_level_and_shapes(kw):
    m = NestedLSTM(13, 8, 12, **kw)
    levels = m.levels()
    assert sum(len(v) for v in levels.values()) == len(list(m.parameters()))
    assert {n.split(".")[0] for n, _ in levels["fast"]} >= {"lstm"}
    if "embed_level" in kw:
        assert any(n.startswith("embed") for n, _ in levels["slow"])
        assert any(n.startswith("head") for n, _ in levels["medium"])
    logits, state = m(torch.randint(0, 13, (3, 5)))
    assert logits.shape == (3, 5, 13)
    assert all(v.shape[0] == 3 for v in state.values())


def test_taps_see_every_level_in_order():
    m = NestedLSTM(13, 8, 12)
    seen = []
    m.tap_fn = lambda name, y: seen.append((name, tuple(y.shape))) or y
    m(torch.randint(0, 13, (2, 4)))
    assert seen == [("fast", (2, 4, 8)), ("medium", (2, 4, 8)), ("slow", (2, 4, 8))]


def test_build_model_and_baseline():
    assert isinstance(build_model(ModelConfig(kind="lstm_lm", d_model=8), 13), LSTMLM)
    m = build_model(ModelConfig(d_model=8, d_ff=12, hierarchical_state=True), 13, chunks=(4, 8))
    assert m.retention["medium"] == pytest.approx(torch.tensor(-0.25).exp().item())


def test_delta_rule_as_a_cms_level_optimizer():
    torch.manual_seed(0)
    m = NestedLSTM(13, 8, 12, zero_init_ffn_out=False)
    levels = (LevelConfig("fast", optimizer="adamw", lr=1e-3),
              LevelConfig("medium", chunk=2, optimizer="delta", lr=0.5),
              LevelConfig("slow", chunk=2, optimizer="delta_batch_mean", lr=0.5))
    cms = CMS(CMSConfig(levels=levels, grad_clip=0.0), m.levels(), model=m)
    before = m.ffn_medium.fc1.weight.detach().clone()
    for step in (1, 2):
        x, y = torch.randint(0, 13, (2, 6)), torch.randint(0, 13, (2, 6))
        F.cross_entropy(m(x)[0].flatten(0, 1), y.flatten()).backward()
        cms.after_backward(step)
        moved = not torch.equal(before, m.ffn_medium.fc1.weight)
        assert moved == (step == 2)  # the delta level waits for its chunk
    assert cms.updates == {"fast": 2, "medium": 1, "slow": 1}


def test_nested_lstm_embedding_is_time_major_for_cudnn():
    """_embed returns the embedding's values as a batch-first view of time-major memory (what the
    cuDNN LSTM works in, so no transposing copy is made around it); under autocast, in its dtype."""
    from nlcore.models import NestedLSTM

    m = NestedLSTM(13, d_model=8, d_ff=16)
    x = torch.randint(0, 13, (3, 5))
    e = m._embed(x)
    assert e.shape == (3, 5, 8) and torch.equal(e, m.embed(x))
    assert e.transpose(0, 1).is_contiguous() and not e.is_contiguous()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m._embed(x).dtype == torch.bfloat16
