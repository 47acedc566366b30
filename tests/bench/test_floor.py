"""nlcore.bench.floor on CPU: the floor times the LSTM alone on a copy, leaving the model untouched."""

from __future__ import annotations

import pytest
import torch

from nlcore.bench.floor import ms_per_call, recurrence_floor


def test_floor_times_a_copy_and_leaves_the_model_alone():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, 8, batch_first=True)
    lstm(torch.randn(2, 3, 8))[0].sum().backward()  # pending gradients the floor must not touch
    before = [(p.detach().clone(), p.grad.clone()) for p in lstm.parameters()]
    out = recurrence_floor(lstm, 2, 5, amp=False, windows=3, steps=2)
    assert out["graphed"] is False and len(out["ms_windows"]) == 3 and out["ms_median"] > 0
    assert (out["batch_size"], out["seq_len"], out["d_in"], out["hidden"]) == (2, 5, 8, 8)
    for p, (w, g) in zip(lstm.parameters(), before):
        assert torch.equal(p, w) and torch.equal(p.grad, g)


def test_graphed_floor_needs_cuda():
    with pytest.raises(ValueError, match="graphed"):
        recurrence_floor(torch.nn.LSTM(4, 4, batch_first=True), 1, 2, amp=False, graphed=True)


def test_ms_per_call_calls_n_times_and_times_them():
    import time

    calls = []
    ms = ms_per_call(lambda: (calls.append(1), time.sleep(0.002)), 5, "cpu")
    assert len(calls) == 5 and 2.0 <= ms < 50.0  # each call sleeps 2 ms
