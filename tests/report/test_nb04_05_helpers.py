"""Helpers of notebooks 04 and 05: the live recall figure, the lever filter, the separation verdict."""

from __future__ import annotations

import math
import time

import pandas as pd
from matplotlib.figure import Figure

from nlcore.report.figures import ablation_ranking, recall_explorer
from nlcore.report.notebook import paired_differences, select_levers, separation


def test_recall_explorer_draws_both_panels_quickly():
    t0 = time.perf_counter()
    fig = recall_explorer(d=16, eta=1.0, load=1.5, key_norm_spread=0.5, seeds=(0, 1))
    assert time.perf_counter() - t0 < 5.0  # a widget redraw: well under a second at d = 16
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    curve, bars = fig.axes
    assert 1.5 in {round(x, 4) for line in curve.get_lines() for x in line.get_xdata()}
    assert len(bars.patches) == 5  # one bar per rule, least squares included
    assert "load 1.5" in fig._suptitle.get_text()


def test_recall_explorer_takes_a_load_off_the_standard_grid():
    fig = recall_explorer(d=8, eta=100.0, load=0.3, seeds=(0,))
    assert "best online write" in fig._suptitle.get_text()


def _table() -> pd.DataFrame:
    rows = [("baseline", 1.70, False), ("state policy", 1.69, False), ("delta rule", 1.73, False),
            ("the prototype's settings", 7.4, True)]
    return pd.DataFrame([{"experiment": "01_cms", "config": f"c{i}", "label": f"01_c{i}", "lever": lv, "same_as": "",
                          "prototype": p, "n": 3, "mean": m, "ci_low": m - 0.01, "ci_high": m + 0.01,
                          "chars_ratio": 1.0, "steps": 10, "batch_size": 2, "seq_len": 8}
                         for i, (lv, m, p) in enumerate(rows)])


def test_select_levers_keeps_the_baseline_and_the_figure_draws():
    t = _table()
    picked = select_levers(t, ["delta rule"])
    assert list(picked["lever"]) == ["baseline", "delta rule"]
    assert list(select_levers(t, [])["lever"]) == ["baseline"]
    assert len(ablation_ranking(picked).axes) == 1  # no prototype rows: one panel
    assert len(ablation_ranking(select_levers(t, t["lever"])).axes) == 2


def test_separation_reads_the_paired_interval():
    runs = pd.DataFrame([(c, s, "valid_bpc", v) for c, vals in
                         {"base": (1.0, 1.1, 1.2), "lower": (0.9, 1.0, 1.1), "higher": (1.1, 1.21, 1.3),
                          "same": (1.01, 1.09, 1.2)}.items() for s, v in enumerate(vals)],
                        columns=["config", "seed", "metric", "value"])
    d = paired_differences(runs, "base").set_index("config")
    verdict = separation(d)
    assert verdict["lower"] == "lower" and verdict["higher"] == "higher" and verdict["same"] == "not separated"
    one = pd.DataFrame({"ci_low": [math.nan], "ci_high": [math.nan]})
    assert separation(one).iloc[0] == "not separated"  # one seed: no interval, nothing separated
