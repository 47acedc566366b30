"""Figures of notebooks 02 (surprise) and 03 (persistent state) on small synthetic result folders:
one pair seed by seed, paired differences by position, and finding titles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from nlcore import stats
from nlcore.report import figures

SEEDS = (0, 1, 2)


def _runs() -> pd.DataFrame:
    """A tidy runs.csv frame: `b` is `a` lowered by a seed-dependent amount on every seed."""
    base = {0: 1.70, 1: 1.72, 2: 1.69}
    rows = [{"config": "a", "seed": s, "metric": "valid_bpc", "value": v} for s, v in base.items()]
    rows += [{"config": "b", "seed": s, "metric": "valid_bpc", "value": v - 0.01 * (s + 1)} for s, v in base.items()]
    rows += [{"config": "c", "seed": 0, "metric": "valid_bpc", "value": 1.0}]
    return pd.DataFrame(rows)


def _positions(tmp_path, config: str, curve) -> None:
    for s in SEEDS:
        run = tmp_path / "runs" / config / f"seed{s}"
        run.mkdir(parents=True)
        by_pos = [float(v) + 0.001 * s for v in curve]
        (run / "summary.json").write_text(json.dumps({"valid_bpc": float(np.mean(by_pos)),
                                                      "valid_bpc_by_position": by_pos}))


def test_paired_seeds_states_how_many_seeds_are_lower_and_whether_the_interval_clears_zero():
    runs = _runs()
    fig = figures.paired_seeds(runs, "b", "a")
    assert isinstance(fig, Figure)
    title = fig._suptitle.get_text()
    assert "lower than a on 3 of 3 seeds" in title
    a = runs[runs.config == "a"].sort_values("seed")["value"].to_numpy()
    b = runs[runs.config == "b"].sort_values("seed")["value"].to_numpy()
    _, lo, hi = stats.paired_diff_ci(b, a)
    assert ("clears zero" in title) == (hi < 0 or lo > 0)
    right = fig.axes[1]
    assert [t.get_text() for t in right.get_yticklabels()][-1].endswith("(n = 3)")
    assert figures.paired_seeds(runs, "b", "a", title="a finding")._suptitle.get_text() == "a finding"


def test_paired_seeds_needs_a_shared_seed():
    runs = _runs()
    with pytest.raises(ValueError, match="no seed ran both"):
        figures.paired_seeds(runs[runs.config != "a"], "c", "a")


def test_position_differences_is_the_mean_per_seed_difference(tmp_path):
    T = 6
    _positions(tmp_path, "base", np.full(T, 1.7))
    _positions(tmp_path, "reset", 1.7 + np.linspace(1.0, 0.0, T))
    fig = figures.position_differences(tmp_path, "reset", "base", title="reset costs at the start")
    (ax,) = fig.axes
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), np.linspace(1.0, 0.0, T), atol=1e-12)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, T + 1))
    assert ax.get_title(loc="left") == "reset costs at the start"
    assert "(n=3)" in ax.get_legend().get_texts()[0].get_text()


def test_position_differences_refuses_windows_of_other_lengths(tmp_path):
    _positions(tmp_path, "base", np.full(4, 1.7))
    _positions(tmp_path, "long", np.full(8, 1.6))
    with pytest.raises(ValueError, match="windows of one length"):
        figures.position_differences(tmp_path, "long", "base")


def test_titles_state_the_finding_above_the_default_description(tmp_path):
    recs = [{"config": c, "metric": "valid_bpc", "mean": m, "ci_low": m - 0.01, "ci_high": m + 0.01, "n_seeds": 3}
            for c, m in (("x_a", 1.7), ("x_b", 1.6), ("y_a", 3.1))]
    fig = figures.ci_panels(recs, "valid_bpc", [("x_", "corpus x", None, ""), ("y_", "corpus y", 3.0, "optimum")],
                            title="b beats a")
    head = fig._suptitle.get_text().splitlines()
    assert head[0] == "b beats a" and "95 % t interval" in head[1]
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["corpus x", "corpus y"]
    assert figures.ci_bars(recs, title="ranked")._suptitle.get_text().startswith("ranked\n")
    diffs = pd.DataFrame([{"config": "x_b", "baseline": "x_a", "n": 3, "mean": -0.1, "ci_low": -0.2, "ci_high": -0.05,
                           "seeds_lower": 3, "baseline_half_width": 0.01}])
    fig = figures.paired_diff_bars(diffs, title="1 of 1 clears zero")
    assert fig._suptitle.get_text().startswith("1 of 1 clears zero\n")
    assert "± half-width of x_a's own 95 % CI" in fig.axes[0].get_title(loc="left")
    _positions(tmp_path, "p", np.full(4, 1.7))
    assert figures.bpc_by_position(tmp_path, ["p"], title="flat").axes[0].get_title(loc="left") == "flat"


def test_unpaired_separated_needs_intervals_that_do_not_overlap():
    from nlcore.report.notebook import unpaired_separated

    recs = [{"config": c, "metric": "valid_bpc", "mean": m, "ci_low": lo, "ci_high": hi, "n_seeds": 3}
            for c, m, lo, hi in (("none", 1.7, 1.68, 1.72), ("close", 1.69, 1.67, 1.71), ("far", 1.6, 1.58, 1.62),
                                 ("one_seed", 1.0, None, None))]
    base = {"none": "none", "close": "none", "far": "none", "one_seed": "none"}
    assert unpaired_separated(recs, base) == ["far"]
    assert unpaired_separated(recs, base, metric="test_bpc") == []
