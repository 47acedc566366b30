"""nlcore.stats: the Student-t interval (and the bootstrap it replaced), paired differences, summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nlcore import stats


def test_bootstrap_is_deterministic_given_seed():
    x = np.random.default_rng(0).normal(size=10)
    assert stats.bootstrap_ci(x, seed=0) == stats.bootstrap_ci(x, seed=0)
    assert stats.bootstrap_ci(x, seed=0) != stats.bootstrap_ci(x, seed=1)


def test_bootstrap_mean_and_ordering():
    x = np.array([1.31, 1.29, 1.35, 1.30, 1.33])
    mean, lo, hi = stats.bootstrap_ci(x)
    assert mean == pytest.approx(x.mean())
    assert x.min() <= lo <= mean <= hi <= x.max()


def test_single_value_has_no_interval():
    mean, lo, hi = stats.bootstrap_ci([1.5])
    assert mean == 1.5 and math.isnan(lo) and math.isnan(hi)


def test_equal_values_give_a_zero_width_interval_exactly():
    assert stats.bootstrap_ci([0.1, 0.1, 0.1]) == (0.1, 0.1, 0.1)


def test_non_finite_values_are_not_averaged_away():
    mean, lo, hi = stats.bootstrap_ci([1.0, float("nan"), 1.2])
    assert math.isnan(mean) and math.isnan(lo) and math.isnan(hi)


def test_interval_matches_the_normal_approximation_for_large_n():
    x = np.random.default_rng(0).normal(size=400)  # standard error 0.05
    mean, lo, hi = stats.bootstrap_ci(x, n_boot=4000)
    assert (hi - lo) / 2 == pytest.approx(1.96 * x.std(ddof=1) / 20, rel=0.1)
    assert lo < mean < hi


def test_level_controls_width():
    x = np.random.default_rng(1).normal(size=20)
    _, lo90, hi90 = stats.bootstrap_ci(x, level=0.90)
    _, lo99, hi99 = stats.bootstrap_ci(x, level=0.99)
    assert hi99 - lo99 > hi90 - lo90


def test_chunked_resampling_equals_the_same_draws_for_long_inputs():
    x = np.random.default_rng(2).normal(size=3000)  # more than one resampling batch
    mean, lo, hi = stats.bootstrap_ci(x, n_boot=2000)
    assert lo < mean < hi and hi - lo < 0.2


@pytest.mark.parametrize(
    "kwargs", [{"values": []}, {"values": [1.0, 2.0], "n_boot": 0},
               {"values": [1.0, 2.0], "level": 1.0}, {"values": [1.0, 2.0], "level": 0.0}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        stats.bootstrap_ci(**kwargs)


def test_paired_difference_removes_shared_seed_variation():
    rng = np.random.default_rng(3)
    seed_effect = rng.normal(scale=0.5, size=5)  # shared by both configs
    a = 1.40 + seed_effect + rng.normal(scale=0.01, size=5)
    b = 1.30 + seed_effect + rng.normal(scale=0.01, size=5)
    d, lo, hi = stats.paired_diff_ci(a, b)
    assert d == pytest.approx(np.mean(a - b))
    assert 0.0 < lo < d < hi
    _, alo, ahi = stats.t_ci(a)
    assert hi - lo < (ahi - alo) / 10


def test_paired_difference_of_a_constant_shift_is_exact():
    a = np.array([1.0, 2.0, 3.0])
    assert stats.paired_diff_ci(a + 0.5, a) == (0.5, 0.5, 0.5)


def test_paired_series_align_on_seed():
    a = pd.Series([1.0, 2.0, 3.0], index=[0, 1, 2])
    b = pd.Series([2.5, 0.5, 1.5], index=[2, 0, 1])  # same seeds, other order
    assert stats.paired_diff_ci(a, b) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError):
        stats.paired_diff_ci(a, pd.Series([1.0, 2.0, 3.0], index=[0, 1, 5]))
    with pytest.raises(ValueError):
        stats.paired_diff_ci([1.0, 2.0], [1.0, 2.0, 3.0])


def _runs():
    rows = []
    for config, base in (("lstm", 1.50), ("cms", 1.40)):
        for seed in range(3):
            for metric, off in (("valid_bpc", 0.0), ("test_bpc", 0.02)):
                rows.append({"config": config, "seed": seed, "metric": metric,
                             "value": base + off + 0.01 * seed})
    return pd.DataFrame(rows)


def test_summarize_records():
    records = stats.summarize(_runs())
    assert [(r["config"], r["metric"]) for r in records] == [
        ("cms", "test_bpc"), ("cms", "valid_bpc"), ("lstm", "test_bpc"), ("lstm", "valid_bpc")]
    rec = records[1]
    assert set(rec) == {"config", "metric", "mean", "std", "ci_low", "ci_high", "n_seeds",
                        "ci_method"}
    assert rec["mean"] == pytest.approx(1.41)
    assert rec["std"] == pytest.approx(0.01)
    assert rec["n_seeds"] == 3 and rec["ci_method"] == "t95"
    assert rec["ci_high"] - rec["mean"] == pytest.approx(4.302652729911275 * 0.01 / 3 ** 0.5)
    assert rec["ci_low"] <= rec["mean"] <= rec["ci_high"]
    assert all(type(v) in (str, int, float) for r in records for v in r.values())
    assert records == stats.summarize(_runs().sample(frac=1.0, random_state=0))


def test_summarize_takes_the_last_step_of_each_seed():
    df = pd.DataFrame({
        "config": ["a"] * 4, "seed": [0, 0, 1, 1], "metric": ["bpc"] * 4,
        "step": [100, 10, 10, 100], "value": [1.0, 9.0, 9.0, 2.0],
    })
    (rec,) = stats.summarize(df)
    assert rec["mean"] == 1.5 and rec["n_seeds"] == 2
    per_step = stats.summarize(df, by=("config", "step"))
    assert [(r["step"], r["mean"]) for r in per_step] == [(10, 9.0), (100, 1.5)]


def test_summarize_single_seed_and_custom_columns():
    df = pd.DataFrame({"arm": ["x"], "seed": [0], "name": ["acc"], "score": [0.9]})
    (rec,) = stats.summarize(df, by="arm", metric_col="name", value_col="score")
    assert rec["arm"] == "x" and rec["metric"] == "acc" and rec["mean"] == 0.9
    assert math.isnan(rec["std"]) and math.isnan(rec["ci_low"]) and rec["n_seeds"] == 1


def test_summarize_rejects_duplicates_and_missing_columns():
    df = _runs()
    with pytest.raises(ValueError, match="more than one row per seed"):
        stats.summarize(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(ValueError, match="missing column"):
        stats.summarize(df.drop(columns="seed"))


@pytest.mark.parametrize("df, q", [(1, 12.706204736174707), (2, 4.302652729911275), (4, 2.7764451051977987),
                                   (10, 2.2281388519649385), (29, 2.045229642132703)])
def test_t_quantile_matches_the_tables(df, q):
    assert stats.t_quantile(0.975, df) == pytest.approx(q, abs=1e-8)


def test_t_interval_closed_form_and_edge_cases():
    mean, lo, hi = stats.t_ci([1.0, 2.0, 3.0])  # s = 1, n = 3: half-width t_{0.975,2} / sqrt(3)
    assert mean == 2.0 and hi - mean == pytest.approx(4.302652729911275 / 3 ** 0.5) and mean - lo == pytest.approx(hi - mean)
    assert stats.t_ci([0.1, 0.1, 0.1]) == (0.1, 0.1, 0.1)
    m, lo, hi = stats.t_ci([1.5])
    assert m == 1.5 and np.isnan(lo) and np.isnan(hi)
    m, lo, hi = stats.t_ci([1.0, float("inf")])
    assert not np.isfinite(m) and np.isnan(lo)
    with pytest.raises(ValueError):
        stats.t_ci([1.0, 2.0], level=1.0)


def test_t_interval_is_wider_than_the_bootstrap_over_three_seeds():
    x = [1.70, 1.71, 1.73]
    _, blo, bhi = stats.bootstrap_ci(x)
    _, tlo, thi = stats.t_ci(x)
    assert tlo < min(x) and thi > max(x)  # the t interval reaches past the seeds
    assert (thi - tlo) > 2 * (bhi - blo)
