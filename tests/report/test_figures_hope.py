"""nlcore.report.figures.hope: tables and figures of notebook 06 on small synthetic result folders."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from nlcore.report.figures import hope


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _run(root, config, seed, bpc, T=8):
    pos = list(np.linspace(bpc + 1.0, bpc, T))
    _write(root / "runs" / config / f"seed{seed}" / "summary.json",
           {"valid_bpc": bpc, "test_bpc": bpc - 0.01, "params": 1000, "chars_per_s": 50.0,
            "valid_bpc_by_position": pos})


@pytest.fixture
def exp(tmp_path):
    """Two finished configurations (3 seeds, and 1 of 2 seeds), one diverged, one named in meta but absent."""
    for s, v in enumerate((1.6, 1.7, 1.65)):
        _run(tmp_path, "hope", s, v)
    _run(tmp_path, "transformer", 0, 1.9)
    for run in ("titans_alpha0.999/seed0", "transformer/seed1"):
        log = tmp_path / "runs" / run / "train.log"
        log.parent.mkdir(parents=True)
        log.write_text("Traceback ...\nnlcore.cms.NonFiniteError: non-finite loss at step 40\n")
    _write(tmp_path / "meta.json", {"configs": {"hope": {}, "transformer": {}, "titans_alpha0.999": {},
                                                "nested_lstm": {}}})
    return tmp_path


def test_bpc_table_rows_status_and_ci(exp):
    t = hope.bpc_table(exp).set_index("config")
    assert list(t.index) == ["nested_lstm", "transformer", "titans_alpha0.999", "hope"]  # registry order
    assert t.loc["hope", "n"] == 3 and t.loc["hope", "status"] == "ok"
    assert math.isclose(t.loc["hope", "valid_bpc"], 1.65)
    assert t.loc["hope", "ci_low"] <= 1.65 <= t.loc["hope", "ci_high"]
    assert t.loc["transformer", "n"] == 1 and t.loc["transformer", "n_run"] == 2
    assert math.isnan(t.loc["transformer", "ci_low"]) and t.loc["transformer", "status"] == "ok"
    assert t.loc["titans_alpha0.999", "status"] == "diverged" and t.loc["titans_alpha0.999", "n_run"] == 1
    assert t.loc["nested_lstm", "status"] == "missing" and t.loc["nested_lstm", "n"] == 0


def test_bpc_table_of_an_empty_folder(tmp_path):
    assert hope.bpc_table(tmp_path).empty


def test_bpc_figures_skip_missing_configs(exp):
    fig = hope.plot_bpc(exp)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["hope (n=3)", "transformer (n=1 of 2 run)"]
    assert "titans_alpha0.999: diverged" in ax.get_xlabel()
    fig = hope.plot_bpc_by_position(exp, configs=("transformer", "hope", "titans", "nope"))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["transformer (n=1)", "hope (n=3)"]
    assert fig.axes[0].get_xscale() == "log"


def test_position_bins_cover_every_position_once():
    for T in (8, 32, 512):
        bins = hope.position_bins(T)
        assert np.array_equal(np.concatenate(bins), np.arange(T))
        assert all(len(b) > 0 for b in bins) and len(bins[0]) == 1


def _bench():
    cfg = {"step_ms_median": 2.0, "batch_size": 2, "seq_len": 4, "params": 10}
    return {"device_name": "GPU", "settings": {"baseline": "transformer", "windows": 3},
            "configs": {"transformer": {**cfg, "chars_per_s": 4.0, "ratio_to_baseline": 1.0},
                        "hope_eager": {**cfg, "chars_per_s": 1.0, "ratio_to_baseline": 4.0}}}


def test_throughput_table_and_figure():
    t = hope.throughput_table(_bench())
    assert list(t["config"]) == ["transformer", "hope_eager"] and list(t["ratio_to_baseline"]) == [1.0, 4.0]
    fig = hope.plot_throughput(_bench())
    texts = [x.get_text() for x in fig.axes[0].texts]
    assert texts == ["baseline", "4.0× transformer's step time"]
    assert fig.axes[0].get_xscale() == "log"


def test_memory_speed_table_and_figure():
    rep = {"environment": {"gpu_name": "GPU"},
           "rows": [{"memory": "linear", "window": 16, "batch": 2, "chunk": 4, "token_s": 1.0, "chunk_s": 0.1,
                     "speedup": 10.0, "token_all_s": [0.9, 1.0, 1.2], "chunk_all_s": [0.1, 0.1, 0.2]}]}
    t = hope.memory_speed_table(rep)
    assert t.loc[0, "speedup"] == 10.0 and t.loc[0, "repeats"] == 3
    fig = hope.plot_memory_speed(rep)
    assert isinstance(fig, Figure) and "10× faster" in [x.get_text() for x in fig.axes[0].texts]


def test_mqar_table_and_figure(tmp_path):
    for model, config, L, acc in (("titans_linear", "titans", 256, 0.15), ("titans_linear", "titans", 1024, 0.05),
                                  ("hope", "hope", 256, 0.14)):
        _write(tmp_path / model / "runs" / config / f"L{L}" / "seed0" / "summary.json",
               {"accuracy": acc, "chance_accuracy": 1 / 256, "seq_len": L, "n_pairs": L // 16, "seed": 0,
                "params": 5, "steps": 10, "diverged_at_step": None, "config": {"model": {}}})
    t = hope.mqar_table(tmp_path)
    assert list(t["model"]) == ["titans_linear", "titans_linear", "hope"]  # ORDER, then length
    assert list(t["seq_len"]) == [256, 1024, 256] and t["accuracy"].between(0, 1).all()
    fig = hope.plot_mqar(tmp_path)
    labels = [x.get_text() for x in fig.axes[0].get_legend().get_texts()]
    assert labels == ["titans_linear (seeds per L: 1/1)", "hope (seeds per L: 1)", "chance"]


def test_colors_are_fixed_per_model():
    assert hope.color("titans_eager") == hope.color("titans") != hope.color("hope")
    assert hope.color("something_else").startswith("#")


def test_mqar_summary_means_intervals_and_paired_differences():
    rows = [{"model": m, "seq_len": 256, "seed": k, "accuracy": acc}
            for m, accs in (("a", (0.2, 0.3, 0.4)), ("b", (0.05, 0.16, 0.24))) for k, acc in enumerate(accs)]
    rows.append({"model": "a", "seq_len": 1024, "seed": 0, "accuracy": 0.05})
    t = pd.DataFrame(rows)
    s = hope.mqar_summary(t).set_index(["model", "seq_len"])
    assert s.loc[("a", 256), "n"] == 3 and abs(s.loc[("a", 256), "accuracy"] - 0.3) < 1e-12
    assert s.loc[("a", 256), "ci_low"] < 0.3 < s.loc[("a", 256), "ci_high"]
    assert s.loc[("a", 1024), "accuracy"] == 0.05 and math.isnan(s.loc[("a", 1024), "ci_low"])  # one seed
    d = hope.mqar_summary(t, versus=("a", "b"))
    assert list(d["seq_len"]) == [256]  # 1024: b did not run it
    assert abs(d.loc[0, "diff"] - (0.9 - 0.45) / 3) < 1e-12 and d.loc[0, "ci_low"] > 0  # a above b in every seed
