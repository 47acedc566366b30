"""Tests for nlcore.data.synthetic: determinism, grammar, the exact entropy rate."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from nlcore.data.synthetic import (
    SyntheticSpec,
    episode_starts,
    forgetful_log_loss_bits,
    generate,
    optimal_log_loss_bits,
)

EPISODE = re.compile(r"\[(\d)\]([a-z]+)\{(\d)\}\n")


def test_reproducible_from_seed_and_different_across_seeds():
    a = SyntheticSpec(seed=0, n_chars=(20_000, 2_000, 2_000))
    assert generate(a, "train") == generate(a, "train")
    assert generate(a, "train") != generate(SyntheticSpec(seed=1, n_chars=a.n_chars), "train")
    assert generate(a, "valid") != generate(a, "test")
    assert np.array_equal(a.transition_matrix(), SyntheticSpec(seed=0).transition_matrix())


def test_lengths_and_grammar():
    spec = SyntheticSpec(n_chars=(30_000, 1_234, 999), gap_min=10, gap_max=20, n_keys=3,
                         alphabet_size=5)
    for split, n in zip(("train", "valid", "test"), spec.n_chars):
        text = generate(spec, split)
        assert len(text) == n and text[0] == "["
    text = generate(spec, "train")
    episodes = EPISODE.findall(text)
    assert "".join(f"[{k}]{b}{{{k2}}}\n" for k, b, k2 in episodes) == text[:text.rindex("\n") + 1]
    for k, body, k2 in episodes:
        assert k == k2 and int(k) < 3 and 10 <= len(body) <= 20 and set(body) <= set("abcde")
    assert episode_starts(text).sum() == text.count("[")


def test_stationary_distribution():
    spec = SyntheticSpec()
    P, pi = spec.transition_matrix(), spec.stationary()
    assert np.allclose(P.sum(1), 1) and np.allclose(pi @ P, pi) and np.isclose(pi.sum(), 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_optimal_predictor_matches_entropy_rate(seed):
    spec = SyntheticSpec(seed=seed)
    text = generate(spec, "train")  # 200 k characters
    rate, opt = spec.entropy_rate_bits(), optimal_log_loss_bits(spec, text)
    assert abs(opt / rate - 1) < 0.01
    forget = forgetful_log_loss_bits(spec, text)
    gap = np.log2(spec.n_keys) * len(EPISODE.findall(text)) / (len(text) - 1)
    assert forget > opt and forget - opt == pytest.approx(gap, rel=0.02)
    assert spec.forgetful_rate_bits() - rate == pytest.approx(np.log2(8) / (72 + 7))


def test_entropy_rate_closed_form_on_a_degenerate_spec():
    # fixed body length and one key: only the letters carry information
    spec = SyntheticSpec(n_keys=1, gap_min=30, gap_max=30, n_chars=(100_000, 10, 10))
    P = spec.transition_matrix()
    pi = spec.stationary(P)
    H = lambda p: -(p * np.log2(p)).sum(-1)  # noqa: E731
    assert spec.entropy_rate_bits() == pytest.approx((H(pi) + 29 * pi @ H(P)) / 37)
    assert spec.forgetful_rate_bits() == pytest.approx(spec.entropy_rate_bits())
    text = generate(spec, "train")
    assert optimal_log_loss_bits(spec, text) == pytest.approx(spec.entropy_rate_bits(), rel=0.01)


def test_generation_is_fast():
    t0 = time.perf_counter()
    generate(SyntheticSpec(), "train")
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(
    "field, value",
    [("seed", -1), ("n_chars", (10, 10)), ("n_chars", (10, 0, 10)), ("alphabet_size", 1),
     ("alphabet_size", 27), ("concentration", 0.0), ("n_keys", 0), ("n_keys", 11),
     ("gap_min", 0), ("gap_max", 5)],
)
def test_spec_validation_names_the_field(field, value):
    kw = {"gap_min": 10} if field == "gap_max" else {}
    with pytest.raises(ValueError, match=field):
        SyntheticSpec(**{**kw, field: value})


def test_malformed_text_is_rejected():
    spec = SyntheticSpec(gap_min=2, gap_max=4, n_keys=2)
    ok = "[1]abc{1}\n[0]ab{0}\n[1]a"
    assert np.isfinite(optimal_log_loss_bits(spec, ok))
    with pytest.raises(ValueError, match="character"):
        optimal_log_loss_bits(spec, "[1]abc{0}\n")  # closing key differs
    with pytest.raises(ValueError, match="episode start"):
        optimal_log_loss_bits(spec, "abc{1}\n")
    with pytest.raises(ValueError, match="body length"):
        optimal_log_loss_bits(spec, "[1]a{1}\n")
