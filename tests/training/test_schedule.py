"""Learning-rate multipliers against their closed forms."""

from __future__ import annotations

import math

import pytest

from nlcore.training.schedule import lr_multiplier


def test_cosine_closed_form():
    f = lr_multiplier("cosine", total=110, warmup=10, min_ratio=0.2)
    assert [f(s) for s in (1, 5, 10)] == pytest.approx([0.1, 0.5, 1.0])  # linear warm-up
    for s in (10, 35, 60, 85, 110):
        p = (s - 10) / 100
        assert f(s) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * p)))
    assert f(110) == pytest.approx(0.2) and f(500) == pytest.approx(0.2)  # floor after the end


def test_constant_and_unknown():
    assert lr_multiplier("constant", 10)(7) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_multiplier("linear", 10)
