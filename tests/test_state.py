"""Persistent state: carried windows equal one long window, document resets equal a fresh
start, reset policies, the batch-size-change and device rules, hierarchical summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nlcore.config import StateConfig
from nlcore.models import NestedLSTM, Resets
from nlcore.state import DocCuts, StateCarrier, row_norms, to_device

V, D = 11, 6


def model(**kw):
    torch.manual_seed(0)
    m = NestedLSTM(V, D, 10, **kw).double()
    for p in m.parameters():  # nonzero everywhere (zero-initialised branches would hide bugs)
        torch.nn.init.normal_(p, std=0.4)
    return m


def ids(B, T, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("norm_residual", [True, False])
def test_carried_windows_equal_one_long_window_forward_and_backward(norm_residual):
    K, T = 4, 5
    m = model(norm_residual=norm_residual)
    x = ids(1, K * T)
    y = ids(1, K * T, seed=1)
    long_logits, _ = m(x)
    long_loss = F.cross_entropy(long_logits.flatten(0, 1), y.flatten(), reduction="sum")
    g_long = torch.autograd.grad(long_loss, list(m.parameters()))
    carrier = StateCarrier(m, StateConfig(reset="never"), 1, "cpu", detach=False)
    outs, loss = [], 0.0
    for i in range(K):
        state, resets = carrier.begin(i)
        logits, new = m(x[:, i * T:(i + 1) * T], state, resets)
        carrier.end(new)
        outs.append(logits)
        loss = loss + F.cross_entropy(logits.flatten(0, 1), y[:, i * T:(i + 1) * T].flatten(), reduction="sum")
    torch.testing.assert_close(torch.cat(outs, 1), long_logits, rtol=0, atol=1e-12)
    for a, b in zip(torch.autograd.grad(loss, list(m.parameters())), g_long):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_detached_windows_cut_the_gradient():
    m = model()
    carrier = StateCarrier(m, StateConfig(reset="never"), 2, "cpu")
    state, _ = carrier.begin(0)
    _, new = m(ids(2, 4), state)
    carrier.end(new)
    assert all(not v.requires_grad for v in carrier.state.values())


@pytest.mark.parametrize("p", [1, 3, 6])
def test_document_reset_equals_running_the_suffix_from_zero(p):
    m = model()
    B, T = 3, 8
    x = ids(B, T)
    h0 = {"h": torch.randn(B, D, dtype=torch.float64), "c": torch.randn(B, D, dtype=torch.float64)}
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, p] = True  # row 1 starts a new document at position p
    mask[2, 2] = True  # row 2 at position 2: the window is split at both cut points
    cuts = tuple(sorted({p, 2}))
    out, _ = m(x, h0, Resets(mask, cuts))
    ref_prefix, _ = m(x[1:2, :p], {k: v[1:2] for k, v in h0.items()})
    ref_suffix, _ = m(x[1:2, p:])  # zero state
    torch.testing.assert_close(out[1:2, :p], ref_prefix, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[1:2, p:], ref_suffix, rtol=0, atol=1e-12)
    ref0, _ = m(x[0:1], {k: v[0:1] for k, v in h0.items()})  # row 0 has no reset
    torch.testing.assert_close(out[0:1], ref0, rtol=0, atol=1e-12)


def test_doc_cuts_mirror_the_stream_layout():
    B, T, L = 2, 4, 8
    ds = np.zeros(B * L + 1, dtype=bool)
    ds[[0, 5, 8 + 2, 8 + 6]] = True  # row 0: positions 0, 5; row 1: positions 2, 6
    dc = DocCuts(ds, B, T, L)
    m0, c0 = dc.window(0)
    m1, c1 = dc.window(1)
    assert c0 == (2,) and c1 == (1, 2)  # window 0 covers 0..3, window 1 covers 4..7
    assert m0[0, 0] and m0[1, 2] and m1[0, 1] and m1[1, 2]


@pytest.mark.parametrize("policy, expect_reset", [("every_batch", [True, True, True, True]),
                                                  ("never", [True, False, False, False]),
                                                  ("every_n", [True, False, True, False])])
def test_reset_policies(policy, expect_reset):
    m = model()
    carrier = StateCarrier(m, StateConfig(reset=policy, reset_every=2), 2, "cpu")
    for i, expect in enumerate(expect_reset):
        state, _ = carrier.begin(i)
        assert bool((row_norms(state) == 0).all()) == expect, i
        _, new = m(ids(2, 3, seed=i), state)
        carrier.end(new)


def test_batch_size_change_rule_and_device_move():
    m = model()
    carrier = StateCarrier(m, StateConfig(reset="never"), 4, "cpu")
    state, _ = carrier.begin(0)
    _, new = m(ids(4, 3), state)
    carrier.end(new)
    carrier.resize(4)  # same size: state kept
    assert float(row_norms(carrier.state).min()) > 0 and carrier.batch_changes == 0
    carrier.resize(2)  # new row layout: zero state of the new size, counted
    assert carrier.state["h"].shape == (2, D) and float(row_norms(carrier.state).max()) == 0
    assert carrier.batch_changes == 1
    st = {"h": torch.randn(2, D)}
    moved = to_device(st, "cpu")
    assert torch.equal(moved["h"], st["h"])


def test_hierarchical_summary_update_and_reset():
    m = model(hierarchical_state=True, chunks=(4, 16))
    B, T = 2, 5
    st = m.init_state(B)
    st = {k: torch.randn_like(v) for k, v in st.items()}
    _, new = m(ids(B, T), st)
    a = math.exp(-1 / 4)
    # recompute the medium level's input u1 = LN(h1) with the fast path alone
    h1, _ = m.lstm(m.embed(ids(B, T)), (st["h"].unsqueeze(0), st["c"].unsqueeze(0)))
    u1 = m.norm_medium(h1)
    torch.testing.assert_close(new["mem_medium"], a * st["mem_medium"] + (1 - a) * u1.mean(1), rtol=0, atol=1e-12)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, 3] = True
    st2 = {k: v.clone() for k, v in st.items()}
    _, new2 = m(ids(B, T), st2, Resets(mask, (3,)))
    h1a, _ = m.lstm(m.embed(ids(B, T))[0:1, 3:])  # row 0 restarts at 3 from zero
    expect0 = (1 - a) * m.norm_medium(h1a).mean(1)[0]
    torch.testing.assert_close(new2["mem_medium"][0], expect0, rtol=0, atol=1e-12)
    torch.testing.assert_close(new2["mem_medium"][1], new["mem_medium"][1], rtol=0, atol=1e-12)


def test_hierarchical_starts_as_the_plain_model():
    torch.manual_seed(0)
    plain = NestedLSTM(V, D, 10).double()
    hier = NestedLSTM(V, D, 10, hierarchical_state=True).double()
    hier.load_state_dict(plain.state_dict(), strict=False)
    x = ids(2, 6)
    st = {k: torch.randn_like(v) for k, v in hier.init_state(2, "cpu").items()}
    torch.testing.assert_close(hier(x, st)[0], plain(x, {"h": st["h"], "c": st["c"]})[0], rtol=0, atol=1e-12)
