"""Causality of every model kind, in float64 and to exact zero, with state carried across windows.

A sequence of 2 windows runs window by window, each starting from the state the previous one
returned, in training mode (gradients on) and in evaluation mode (`torch.no_grad`), as the trainer
and `evaluate` run it; models that read targets (`uses_targets`: HOPE's in-forward writes) get each
position's next character, the last position of a window the next window's first. Then:

- changing the input at position t leaves every logit before t bit for bit unchanged;
- changing the target at position t leaves every logit up to the next write boundary unchanged
  (the write that reads it happens at the end of its chunk, and only later predictions see it).

Models that peek at the next character (`Leaky`) or read their own target (`LeakyTargets`) must
fail these checks: the test can fail.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nlcore.config import ModelConfig
from nlcore.models import build_model

V, T, WINDOWS = 11, 8, 2
SMALL = dict(d_model=8, d_ff=16, n_layers=2, n_heads=2, mem_chunk=4, dropout=0.0)
KINDS = {
    "nested_lstm": ModelConfig(kind="nested_lstm", **SMALL),
    "nested_lstm_hierarchical": ModelConfig(kind="nested_lstm", hierarchical_state=True, **SMALL),
    "lstm_lm": ModelConfig(kind="lstm_lm", **SMALL),
    "transformer": ModelConfig(kind="transformer", **SMALL),
    "titans_linear": ModelConfig(kind="titans", memory="linear", **SMALL),
    "titans_mlp": ModelConfig(kind="titans", memory="mlp", **SMALL),
    "titans_mlp_token": ModelConfig(kind="titans", memory="mlp", mem_impl="token", **SMALL),
    "hope_in_forward": ModelConfig(kind="hope", cms_mode="in_forward", cms_chunks="4,8", cms_lr=0.5, **SMALL),
    "hope_layer_teach": ModelConfig(kind="hope", cms_mode="in_forward", cms_teach="layer", cms_chunks="4,8",
                                    cms_lr=0.5, **SMALL),
    "hope_outer": ModelConfig(kind="hope", cms_mode="outer", cms_chunks="4,8", **SMALL),
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    cfg = KINDS[name]
    chain = ("medium", "slow") if cfg.kind == "hope" and cfg.cms_mode == "outer" else None
    return build_model(cfg, V, chunks=(2, 4), chain_levels=chain).double()


class Leaky(nn.Module):
    """A model that adds a trace of the next character to each position's logits: not causal."""

    uses_targets = False

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x, state=None, resets=None):
        logits, state = self.inner(x, state)
        nxt = torch.nn.functional.pad(x[:, 1:], (0, 1), value=0)
        return logits + 1e-9 * nn.functional.one_hot(nxt, V).to(logits.dtype), state


class LeakyTargets(nn.Module):
    """A model that adds a trace of each position's own target to its logits, with a nominal
    write chunk of 4: it reads targets before any write boundary."""

    uses_targets = True
    chunks = (4,)

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x, state=None, resets=None, targets=None):
        logits, state = self.inner(x, state)
        return logits + 1e-9 * nn.functional.one_hot(targets, V).to(logits.dtype), state


def logits_over(model: nn.Module, seq: torch.Tensor, training: bool, targets: torch.Tensor | None = None):
    """Logits for seq[:, :-1], window by window with carried state; the targets are seq[:, 1:]
    unless given (one per input position)."""
    targets = seq[:, 1:] if targets is None else targets
    model.train(training)
    state, out = None, []
    with torch.set_grad_enabled(training):
        for w in range(WINDOWS):
            x, y = seq[:, w * T:(w + 1) * T], targets[:, w * T:(w + 1) * T]
            kw = {"targets": y} if getattr(model, "uses_targets", False) else {}
            logits, state = model(x, state, None, **kw)
            state = {k: v.detach() for k, v in state.items()} if isinstance(state, dict) else state
            out.append(logits.detach())
    return torch.cat(out, dim=1)


def changed(seq: torch.Tensor, t: int) -> torch.Tensor:
    other = seq.clone()
    other[:, t] = (seq[:, t] + 1 + torch.arange(seq.shape[0])) % V
    return other


def first_write_after(model: nn.Module, t: int) -> int:
    """The first position whose logits may read the target at t: the end of t's chunk for models
    that write from targets in their forward (HOPE in_forward), never for the others."""
    if getattr(model, "uses_targets", False) and getattr(model, "mode", "in_forward") == "in_forward":
        c = model.chunks[0]
        return (t // c + 1) * c
    return WINDOWS * T  # a model without targets in its forward never reads them


SEQ = torch.randint(0, V, (3, WINDOWS * T + 1), generator=torch.Generator().manual_seed(1))


def check_inputs(model: nn.Module, name: str, training: bool) -> None:
    base = logits_over(model, SEQ, training)
    for t in (0, 3, T - 1, T, T + 5, WINDOWS * T - 1):
        out = logits_over(model, changed(SEQ, t), training)
        assert torch.equal(out[:, :t], base[:, :t]), f"{name}: a logit before position {t} sees position {t}"
        assert not torch.equal(out[:, t], base[:, t]), f"{name}: the input at {t} has no effect (a vacuous test)"


def check_targets(model: nn.Module, name: str, training: bool) -> None:
    base = logits_over(model, SEQ, training)
    for t in (1, 3, T - 1, T + 2, WINDOWS * T - 1):  # inputs unchanged, the target of position t changed
        out = logits_over(model, SEQ, training, targets=changed(SEQ[:, 1:], t))
        b = first_write_after(model, t)
        assert torch.equal(out[:, :b], base[:, :b]), f"{name}: a logit before {b} reads the target at {t}"
        if b < WINDOWS * T:  # a write reads it: the logits after the boundary move (not vacuous)
            assert not torch.equal(out[:, b:], base[:, b:]), f"{name}: the write at {b} ignores the target at {t}"


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(KINDS))
def test_input_at_t_leaves_every_earlier_logit_unchanged(name, training):
    check_inputs(build(name), name, training)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(KINDS))
def test_target_at_t_is_read_only_after_the_next_write(name, training):
    check_targets(build(name), name, training)


def test_a_model_that_peeks_at_the_next_input_fails():
    with pytest.raises(AssertionError, match="sees position"):
        check_inputs(Leaky(build("transformer")), "leaky", training=False)


def test_a_model_that_reads_its_own_target_fails():
    with pytest.raises(AssertionError, match="reads the target"):
        check_targets(LeakyTargets(build("transformer")), "leaky", training=True)
