"""nlcore.report.test_time: the fair test-time-learning table reads the committed dynamic-evaluation runs."""

from __future__ import annotations

import pytest

from nlcore.report import test_time


def test_table_reads_every_baseline_and_hope():
    runs = test_time.dynamic_runs()
    assert set(runs["model"]) == set(test_time.BASELINES) and runs.groupby("model").size().eq(3).all()
    assert runs[["valid_bpc", "valid_bpc_dynamic", "test_bpc", "test_bpc_dynamic"]].lt(10).all().all()
    table = test_time.test_time_table()
    assert set(table["model"]) == {*test_time.BASELINES, "hope"}
    assert table["test_mean"].is_monotonic_increasing
    for _, row in table[table["model"] != "hope"].iterrows():  # the paired gain is the mean per-seed drop
        g = runs[runs["model"] == row["model"]]
        gain = float((g["test_bpc"] - g["test_bpc_dynamic"]).mean())
        assert row["test gain"].startswith(f"{gain:.3f}")
        assert abs(row["test_mean"] - g["test_bpc_dynamic"].mean()) < 1e-12


def test_each_model_reads_its_own_grid():
    """Titans comes from grid_c (retrained after the compiled-backward fix), the others from grid_a; the
    mapping is what selects the files."""
    runs = test_time.dynamic_runs()
    titans_c = test_time.dynamic_runs(grids={"titans_linear": "grid_c"})
    titans_b = test_time.dynamic_runs(grids={"titans_linear": "grid_b"})
    assert set(titans_c["model"]) == {"titans_linear"} and len(titans_c) == 3
    mine = runs[runs["model"] == "titans_linear"].reset_index(drop=True)
    assert mine["test_bpc"].tolist() == titans_c["test_bpc"].tolist() != titans_b["test_bpc"].tolist()


def test_missing_runs_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dynamic-evaluation runs"):
        test_time.dynamic_runs(tmp_path)


def test_plot_has_a_row_per_model():
    fig = test_time.plot_test_time()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert set(test_time.BASELINES) <= set(labels) and "hope (in-forward writes)" in labels
