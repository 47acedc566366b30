"""Notebook 08's figures read the runs' evaluation points and draw what they hold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nlcore.report.figures import continual_curves, continual_points, tradeoff


def write_run(root, config, seed, a, b):
    run = root / "runs" / config / f"seed{seed}"
    run.mkdir(parents=True)
    lines = [{"point": i, "step_b": 10 * i, "a_valid_bpc": x, "b_valid_bpc": y} for i, (x, y) in enumerate(zip(a, b))]
    (run / "continual.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (run / "summary.json").write_text("{}")


def test_points_curves_and_tradeoff(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, "x", seed, [2.0, 2.1 + seed / 10, 2.2], [3.0, 2.8, 2.5 - seed / 10])
        write_run(tmp_path, "y", seed, [1.9, 1.9, 1.95], [3.1, 3.0, 2.9])
    (tmp_path / "runs" / "z" / "seed0").mkdir(parents=True)  # unfinished: no summary.json, left out
    pts = continual_points(tmp_path)
    assert sorted(pts["config"].unique()) == ["x", "y"] and len(pts) == 12
    fig = continual_curves(pts, ["x", "y"], relative=True)
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("x")]
    assert np.allclose(line.get_ydata(), [0.0, 0.15, 0.2])  # mean over seeds of a_k − a_0
    records = [{"config": c, "metric": m, "mean": v, "ci_low": v - 0.01, "ci_high": v + 0.01, "n_seeds": 2}
               for c, f, l in (("x", 0.2, 0.55), ("y", 0.05, 0.2)) for m, v in (("forgetting_bpc", f), ("learning_bpc", l))]
    ax = tradeoff(records, ["x", "y"]).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["x (n=2)", "y (n=2)"]
    assert not ax.texts  # the legend names the points; labels beside them overlapped
    with pytest.raises(FileNotFoundError, match="no finished continual runs"):
        continual_points(tmp_path / "nowhere")


def test_unlearned_names_the_runs_whose_phase_a_ended_above_the_threshold():
    import pandas as pd

    from nlcore.report.notebook.continual import UNLEARNED_BPC, unlearned

    runs = pd.DataFrame({"config": ["x", "x", "y", "y"], "metric": ["a_valid_bpc_after_a"] * 3 + ["learning_bpc"],
                         "seed": [0, 1, 0, 0], "value": [1.8, UNLEARNED_BPC + 0.5, UNLEARNED_BPC, 9.0]})
    assert unlearned(runs) == {"x": [(1, UNLEARNED_BPC + 0.5)]}  # y: at the threshold, and 9.0 is another metric
