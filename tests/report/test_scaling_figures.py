"""Notebook 07's figures and tables read the runs and draw what they hold: the points are the means
over seeds, the whiskers their Student-t intervals, the axes logarithmic where the lesson says so,
and a point of one seed says it has no interval."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from nlcore.report.figures import (
    bench_seconds,
    compute_matched,
    context_curves,
    context_gain,
    ranking_panels,
    scaling_curves,
    scaling_points,
    scaling_runs,
    sweep_curves,
)
from nlcore.report.figures.scaling import parse_label, si
from nlcore.stats import t_ci

B, T = 16, 512


def write_run(root, config, seed, *, steps=1000, lr=2e-3, valid=1.6, test=1.5, cps=2e5, status="finished",
              params=3_000_000, entropy=None, device="cuda"):
    run = root / "runs" / config / f"seed{seed}"
    run.mkdir(parents=True)
    summary = {"status": status, "steps": steps, "params": params, "valid_bpc": valid, "test_bpc": test,
               "chars_per_s": cps, "train_time_s": steps * B * T / cps, "entropy_rate_bits": entropy}
    if status != "finished":
        summary.update(valid_bpc=None, test_bpc=None)
    levels = [{"name": "fast", "lr": lr}, {"name": "medium", "lr": 1.0}]
    meta = {"device": device, "environment": {"gpu_name": "Test GPU"} if device == "cuda" else {},
            "config": {"steps": steps, "data": {"batch_size": B, "seq_len": T, "corpus": "wikitext2"},
                       "cms": {"levels": levels}}}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "meta.json").write_text(json.dumps(meta))


def whiskers(ax) -> list[np.ndarray]:
    """The (2, 2) segments of every errorbar whisker drawn on `ax`."""
    return [np.asarray(seg) for cont in ax.containers for col in cont.lines[2] for seg in col.get_segments()]


def line(ax, prefix: str):
    (ln,) = [ln for ln in ax.get_lines() if ln.get_label().startswith(prefix)]
    return ln


# the budgets: model a with 3 seeds at 8.2 M and 33 M characters, model b with one seed at 8.2 M
A = {"8.2M": (1000, [1.50, 1.52, 1.55], [2.0e5, 2.1e5, 1.9e5]), "33M": (4000, [1.40, 1.41, 1.45], [2.0e5, 2.0e5, 2.2e5])}


@pytest.fixture
def budgets(tmp_path):
    for budget, (steps, tests, cpss) in A.items():
        for seed, (t, cps) in enumerate(zip(tests, cpss)):
            write_run(tmp_path, f"hope_{budget}", seed, steps=steps, test=t, cps=cps)
    write_run(tmp_path, "transformer_8.2M", 0, steps=1000, test=1.6, cps=8e5)
    write_run(tmp_path, "transformer_33M", 0, steps=4000, status="diverged")
    return scaling_runs(tmp_path)


def test_labels_name_the_model_and_the_budget():
    assert parse_label("hope_8.2M") == ("hope", "8.2M") and parse_label("titans_linear_131M") == ("titans_linear", "131M")
    assert parse_label("hope_outer_lr0.004") == ("hope_outer", None) and parse_label("nested_lstm") == ("nested_lstm", None)
    assert [si(v) for v in (8_192_000, 32_768_000, 131_072_000, 5120)] == ["8.2 M", "33 M", "131 M", "5.1 k"]


def test_runs_hold_the_characters_the_seconds_and_no_bpc_for_a_diverged_run(budgets, tmp_path):
    r = budgets.set_index(["config", "seed"])
    assert r.loc[("hope_33M", 1), "chars"] == 4000 * B * T
    # the seconds in training steps are the characters over the throughput
    assert r.loc[("hope_33M", 2), "train_s"] == pytest.approx(4000 * B * T / 2.2e5)
    assert r.loc[("hope_8.2M", 0), "device"] == "Test GPU" and r.loc[("hope_8.2M", 0), "lr"] == 2e-3
    assert r.loc[("transformer_33M", 0), "status"] == "diverged" and math.isnan(r.loc[("transformer_33M", 0), "test_bpc"])
    pts = scaling_points(budgets).set_index("config")
    assert "transformer_33M" not in pts.index and pts.loc["hope_8.2M", "n"] == 3
    with pytest.raises(FileNotFoundError, match="no runs under"):
        scaling_runs(tmp_path / "nowhere")


def test_budget_curves_plot_the_seed_means_with_their_t_intervals_on_a_log_axis(budgets):
    ax = scaling_curves(budgets, x="chars").axes[0]
    assert ax.get_xscale() == "log"
    hope = line(ax, "hope")
    assert hope.get_label() == "hope (n=3)"
    assert np.allclose(hope.get_xdata(), [1000 * B * T, 4000 * B * T])
    assert np.allclose(hope.get_ydata(), [np.mean(A["8.2M"][1]), np.mean(A["33M"][1])])
    want = sorted(t_ci(A[b][1])[1:] for b in A)  # (lo, hi) of each budget
    got = sorted((seg[:, 1].min(), seg[:, 1].max()) for seg in whiskers(ax))
    assert np.allclose(got, want)  # one whisker per budget of hope, none for one seed
    assert line(ax, "transformer").get_label() == "transformer (n=1, no interval)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8.2 M", "33 M"]


def test_seconds_axis_places_each_point_at_its_mean_time_with_both_intervals(budgets):
    ax = scaling_curves(budgets, x="train_s").axes[0]
    hope = line(ax, "hope")
    seconds = [np.mean([A[b][0] * B * T / c for c in A[b][2]]) for b in A]
    assert np.allclose(hope.get_xdata(), seconds) and ax.get_xscale() == "log"
    horizontal = [s for s in whiskers(ax) if np.isclose(s[0, 1], s[1, 1])]
    assert len(horizontal) == 2 and "Test GPU" in ax.get_xlabel()


def test_bench_seconds_price_every_budget_of_a_model_at_its_step_time(budgets):
    exp = budgets["experiment"].iloc[0]
    report = {"device_name": "Bench GPU", "configs": {f"{exp}:hope_8.2M": {"step_ms_median": 40.0},
                                                       "other:transformer_8.2M": {"step_ms_median": 3.0}}}
    r = bench_seconds(budgets, report).set_index(["config", "seed"])
    assert r.loc[("hope_8.2M", 0), "gpu_s"] == pytest.approx(1000 * 0.040)
    assert r.loc[("hope_33M", 2), "gpu_s"] == pytest.approx(4000 * 0.040)  # the same step, four times the steps
    assert math.isnan(r.loc[("transformer_8.2M", 0), "gpu_s"])  # another experiment's step time prices nothing
    ax = scaling_curves(bench_seconds(budgets, report), x="gpu_s").axes[0]
    assert np.allclose(line(ax, "hope").get_xdata(), [40.0, 160.0]) and "Bench GPU" in ax.get_xlabel()
    m = compute_matched(bench_seconds(budgets, report), reference="hope", seconds="gpu_s")
    assert (m["reference_s"].unique() == [40.0, 160.0]).all()
    wide = {"device_name": "Bench GPU", "configs": {"other:transformer": {"step_ms_median": 5.0}}}
    assert bench_seconds(budgets, [report, wide])["gpu_s"].equals(bench_seconds(budgets, report)["gpu_s"])
    with pytest.raises(ValueError, match="different devices"):
        bench_seconds(budgets, [report, dict(wide, device_name="Other GPU")])


def test_sweep_rings_the_chosen_rate_and_marks_a_rate_without_bpc(tmp_path):
    for lr, v in ((1e-3, 1.7), (2e-3, 1.6), (4e-3, 1.65)):
        write_run(tmp_path, f"hope_lr{lr:g}", 0, lr=lr, valid=v)
    write_run(tmp_path, "hope_lr0.008", 0, lr=8e-3, status="diverged")
    ax = sweep_curves(scaling_runs(tmp_path), {"hope": 2e-3}).axes[0]
    assert ax.get_xscale() == "log"
    curve = line(ax, "hope")
    assert curve.get_label() == "hope (n=1, no interval)" and np.allclose(curve.get_ydata(), [1.7, 1.6, 1.65])
    ring = line(ax, "chosen")
    assert np.allclose(ring.get_xdata(), [2e-3]) and np.allclose(ring.get_ydata(), [1.6])
    assert np.allclose(line(ax, "no bpc").get_xdata(), [8e-3])
    assert not whiskers(ax)
    with pytest.raises(AssertionError):  # the ring marks the lowest point, not another one
        assert np.allclose(line(sweep_curves(scaling_runs(tmp_path), {"hope": 1e-3}).axes[0], "chosen").get_ydata(), [1.6])


def test_ranking_panels_order_models_best_first_per_corpus(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for seed in range(3):
        write_run(a, "hope", seed, test=1.4 + seed / 100)
        write_run(a, "transformer", seed, test=1.5)
        write_run(b, "hope", seed, test=2.1)
        write_run(b, "transformer", seed, test=2.0 + seed / 100)
    fig = ranking_panels({"A": scaling_runs(a), "B": scaling_runs(b)})
    first, second = ([t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes)
    assert first == ["1. hope (n=3)", "2. transformer (n=3)"] and second == ["1. transformer (n=3)", "2. hope (n=3)"]
    assert [ax.get_title() for ax in fig.axes] == ["A", "B"]
    got = sorted((s[:, 0].min(), s[:, 0].max()) for s in whiskers(fig.axes[0]))
    assert np.allclose(got[0], t_ci([1.4, 1.41, 1.42])[1:])


def test_compute_matched_takes_the_best_configuration_within_the_reference_time(budgets, tmp_path):
    m = compute_matched(budgets, reference="hope").set_index("reference")
    hope_small = np.mean([1000 * B * T / c for c in A["8.2M"][2]])
    assert m.loc["hope_8.2M", "reference_s"] == pytest.approx(hope_small)
    # the transformer's 8.2 M run takes a quarter of hope's time; its 33 M run diverged
    assert m.loc["hope_8.2M", "config"] == "transformer_8.2M"
    assert m.loc["hope_8.2M", "minus_reference"] == pytest.approx(1.6 - np.mean(A["8.2M"][1]))
    # four times faster: its 33 M run fits in hope's 8.2 M seconds, its 131 M run (lower still) does not
    write_run(tmp_path / "b", "hope_8.2M", 0, steps=1000, test=1.5, cps=2e5)
    write_run(tmp_path / "b", "transformer_33M", 0, steps=4000, test=1.45, cps=8.1e5)
    write_run(tmp_path / "b", "transformer_131M", 0, steps=16000, test=1.3, cps=8.1e5)
    write_run(tmp_path / "b", "titans_8.2M", 0, steps=1000, test=1.2, cps=1.9e5)  # slower than hope: no entry
    m = compute_matched(scaling_runs(tmp_path / "b")).set_index("model")
    assert m.loc["transformer", "config"] == "transformer_33M" and m.loc["transformer", "bpc"] == 1.45
    assert pd.isna(m.loc["titans", "config"]) and math.isnan(m.loc["titans", "bpc"])


def context_frame(values: dict[str, list[list[float]]], counts=(1, 2, 4, 8, 1)) -> pd.DataFrame:
    """Tidy context rows: config -> per seed, bpc of the bins starting at 1, 2, 4, ... holding `counts`."""
    rows = []
    for config, seeds in values.items():
        for seed, bpcs in enumerate(seeds):
            for k, v in enumerate(bpcs):
                rows.append({"config": config, "seed": seed, "bin_lo": 2 ** k, "bin_hi": 2 ** (k + 1),
                             "count": counts[k], "bpc": v})
    return pd.DataFrame(rows)


def test_context_curves_plot_bin_means_with_t_bands_on_a_log2_axis():
    seeds = [[3.0, 2.5, 2.2, 2.0], [3.2, 2.6, 2.3, 2.1], [3.1, 2.4, 2.1, 1.9]]
    ctx = context_frame({"hope_131M": seeds, "transformer_131M": [[3.0, 2.8, 2.8, 2.8]]})
    fig = context_curves(ctx, ["hope_131M", "transformer_131M"], window=4)
    ax, bx = fig.axes
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2 and bx.get_yscale() == "log"
    hope = line(ax, "hope_131M")
    assert hope.get_label() == "hope_131M (n=3)"
    assert np.allclose(hope.get_xdata(), [1, 2, 4, 8]) and np.allclose(hope.get_ydata(), np.mean(seeds, axis=0))
    band = ax.collections[0].get_paths()[0].vertices  # the band's outline: the upper and lower ends
    lo, hi = np.array([t_ci(col)[1:] for col in np.array(seeds).T]).T
    assert np.isclose(band[:, 1].max(), hi.max()) and np.isclose(band[:, 1].min(), lo.min())
    assert line(ax, "transformer").get_label() == "transformer_131M (n=1, no interval)"
    assert any(ln.get_label().startswith("training window T = 4") for ln in ax.get_lines())
    assert np.allclose(bx.get_lines()[0].get_ydata(), [1, 2, 4, 8])


def test_context_axis_spans_the_bins_from_scale_from_and_names_the_early_cost():
    seeds = [[20.0, 9.0, 2.2, 2.0], [22.0, 8.0, 2.3, 2.1], [21.0, 8.5, 2.1, 1.9]]
    ctx = context_frame({"hope_131M": seeds})
    ax = context_curves(ctx, ["hope_131M"], scale_from=4).axes[0]
    lo, hi = np.array([t_ci(col)[1:] for col in np.array(seeds)[:, 2:].T]).T
    bottom, top = ax.get_ylim()
    assert bottom < lo.min() and hi.max() < top < 3.0  # the first two bins (8 to 22 bpc) lie above it
    assert "reach up to 21.0 bpc" in ax.get_title()
    assert context_curves(ctx, ["hope_131M"], scale_from=1).axes[0].get_title() == ""  # nothing above


def test_context_gain_is_the_per_seed_fall_beyond_a_position():
    seeds = [[3.0, 2.5, 2.2, 2.0, 9.0], [3.2, 2.6, 2.3, 2.1, 9.0], [3.1, 2.4, 2.1, 1.8, 9.0]]
    g = context_gain(context_frame({"hope": seeds}), start=3, min_share=0.4).iloc[0]
    # start 3 lies in the bin [2, 4); the bin of 8 holds 8 of the 16 predictions, the farthest with 40 %
    # (the bin of 16 holds one: too few to read)
    assert (g["from_bin"], g["to_bin"], g["n"]) == (2, 8, 3)
    assert np.allclose([g["mean"], g["ci_low"], g["ci_high"]], t_ci([0.5, 0.5, 0.6]))
    assert context_gain(context_frame({"hope": seeds}), start=8, min_share=0.4).empty  # nothing read beyond 8


def test_a_whisker_far_beyond_the_means_is_cut_at_the_axis_and_named(tmp_path):
    for seed, t in enumerate([1.50, 1.52, 1.55]):
        write_run(tmp_path, "hope_8.2M", seed, test=t)
    for seed, t in enumerate([3.39, 1.58, 1.58]):  # one seed collapsed: the t interval spans [-0.4, 4.8]
        write_run(tmp_path, "hope_outer_8.2M", seed, test=t)
    runs = scaling_runs(tmp_path)
    ax = scaling_curves(runs, x="chars").axes[0]
    lo, hi = ax.get_ylim()
    means = [np.mean([1.50, 1.52, 1.55]), np.mean([3.39, 1.58, 1.58])]
    assert lo < min(t_ci([1.50, 1.52, 1.55])[1:]) and hi > max(means)  # the means and hope's whisker show
    assert lo > 0 and hi < t_ci([3.39, 1.58, 1.58])[2]  # the collapsed seed's whisker does not set the axis
    (note,) = [t.get_text() for t in ax.texts if t.get_text().startswith("whiskers cut")]
    assert "hope_outer_8.2M [-0." in note and "(n=3)" in note and "hope_8.2M" not in note
    panel = ranking_panels({"A": runs}).axes[0]
    assert panel.get_xlim()[1] < t_ci([3.39, 1.58, 1.58])[2]
    plain = scaling_curves(scaling_runs(tmp_path).query("model == 'hope'"), x="chars").axes[0]
    assert not plain.texts  # nothing cut, nothing said


def test_a_band_wider_than_the_spread_of_the_means_is_left_out_and_named():
    steady = [[2.0, 1.9, 1.8, 1.7], [2.1, 2.0, 1.9, 1.8], [2.0, 1.9, 1.8, 1.7]]
    failed = [[4.0, 4.0, 4.0, 4.0], [2.2, 2.1, 2.0, 1.9], [2.2, 2.1, 2.0, 1.9]]  # one seed stuck at 4 bpc
    ctx = context_frame({"hope_33M": steady, "hope_outer_33M": failed})
    ax = context_curves(ctx, ["hope_33M", "hope_outer_33M"], scale_from=1).axes[0]
    assert line(ax, "hope_outer").get_label() == "hope_outer_33M (n=3; band too wide: not drawn)"
    assert line(ax, "hope_33M").get_label() == "hope_33M (n=3)" and len(ax.collections) == 1  # hope's band only
    bottom, top = ax.get_ylim()
    assert top < t_ci([4.0, 2.2, 2.2])[2] and top > np.mean([4.0, 2.2, 2.2])  # the means set the axis, not the band
    assert bottom > 0
