"""Helpers of notebooks 06_hope_titans and A1_performance: the per-character viewer, the n-gram
losses behind its example, the zoomed bpc figure, the benchmark figures and `BenchQuote`, which
records into the same ledger as `nl.notebook.Quote`."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from nlcore import paths
from nlcore.report import figures as F
from nlcore.report.figures import hope
from nlcore.report.notebook import cite

# ---------------------------------------------------------------------------- 06


def test_ngram_losses_are_bits_of_a_smoothed_count_model():
    train = "abababab"
    uni = hope.ngram_losses(train, "ab", order=0)
    assert np.allclose(uni, [1.0, 1.0])  # two letters, equally frequent, add-one smoothing keeps it at 1/2
    bi = hope.ngram_losses(train, "abb", order=1)  # after 'a' always 'b' in train; after 'b' never 'b'
    assert bi.shape == (2,) and bi[0] < 1.0 < bi[1]
    assert math.isclose(bi[0], -math.log2((4 + 1) / (4 + 2)))


def test_char_delta_text_colours_by_the_difference():
    html = hope.char_delta_text("a<b", [1.0, 0.0], [3.0, 0.0], label_a="x", label_b="y", scale=2.0).data
    assert "&lt;" in html  # escaped
    assert "rgba(0,114,178,1.00)" in html  # a saves 2 bits on '<': full blue
    assert html.count("rgba(213,94,0,0.00)") == 2  # 'a' is uncoloured (no loss), 'b' saves nothing
    assert "x 0.500" in html and "y 1.500" in html
    with pytest.raises(ValueError, match="equal"):
        hope.char_delta_text("ab", [1.0], [1.0, 2.0])


def _runs(root, config, values):
    for s, v in enumerate(values):
        d = root / "runs" / config / f"seed{s}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"valid_bpc": v, "test_bpc": v, "params": 10, "chars_per_s": 1.0}))


def test_plot_bpc_zooms_and_writes_off_scale_values(tmp_path):
    _runs(tmp_path, "hope", (1.60, 1.62, 1.61))
    _runs(tmp_path, "titans", (3.40, 3.40, 3.40))
    _runs(tmp_path, "hope_outer_adamw", (1.9, 3.7, 6.3))
    fig = hope.plot_bpc(tmp_path, zoom=0.5)
    ax = fig.axes[0]
    assert ax.get_xlim()[1] == pytest.approx(1.61 + 0.5)
    texts = [t.get_text() for t in ax.texts]
    assert any("all 3 seeds at 3.40" in t for t in texts), texts
    assert any("seeds at 3.70, 6.30" in t and "mean 3.97" in t for t in texts), texts
    assert ax.get_title(loc="left").startswith("hope predicts held-out text best")
    assert len(hope.plot_bpc(tmp_path, zoom=None).axes[0].texts) == 0


def test_a_diverged_runs_summary_counts_as_run_not_finished(tmp_path):
    _runs(tmp_path, "hope", (1.60, 1.62, 1.61))
    _runs(tmp_path, "titans_norm", (9.0, 9.0, 2.16))
    for s in (0, 1):  # the grid keeps a divergence as a summary without bpc
        (tmp_path / "runs" / "titans_norm" / f"seed{s}" / "summary.json").write_text(
            json.dumps({"status": "diverged", "ended_at_step": 95}))
    table = hope.bpc_table(tmp_path).set_index("config")
    assert (table.loc["titans_norm", "n_run"], table.loc["titans_norm", "n"]) == (3, 1)
    assert table.loc["titans_norm", "valid_bpc"] == pytest.approx(2.16)
    assert hope.run_status(tmp_path / "runs" / "titans_norm" / "seed0") == "diverged"
    texts = [t.get_text() for t in hope.plot_bpc(tmp_path, zoom=0.5).axes[0].texts]
    assert any("its one seed at 2.16 bpc" in t for t in texts), texts


# ---------------------------------------------------------------------------- A1


def _report(ratios: dict, batch: int = 16, rev: str = "abcdef0123", suffix: str = "") -> dict:
    return {"git": {"revision": rev}, "device_name": "GPU", "settings": {"baseline": "transformer", "windows": 4},
            "configs": {f"{m}{suffix}": {"ratio_to_baseline": r, "batch_size": batch, "seq_len": 512,
                                         "step_ms_median": 2.0 * r, "chars_per_s": 1e6 / r}
                        for m, r in ratios.items()}}


def test_batch_ratios_pair_models_across_reports():
    small = _report({"transformer": 1.0, "nested_lstm": 2.4, "hope": 14.0})
    large = _report({"transformer": 1.0, "nested_lstm": 1.0, "hope": 9.8}, batch=64, suffix="_b64")
    t = F.batch_ratios(small, large)
    assert list(t["model"]) == ["transformer", "nested_lstm", "hope"]
    assert t.set_index("model").loc["nested_lstm", ["ratio_small", "ratio_large"]].tolist() == [2.4, 1.0]
    fig = F.plot_batch_ratios(t, F.report_revision(large))
    assert isinstance(fig, Figure) and "nested_lstm catches up" in fig.axes[0].get_title(loc="left")
    assert F.report_revision(large) == "abcdef0"


def test_graph_pairs_floor_table_and_their_figures():
    rep = {"configs": {"g": {"step_ms_median": 2.0}, "e": {"step_ms_median": 5.0}}}
    t = F.graph_pairs({"r": rep}, [("r", "g", "e")])
    assert t["speedup"].tolist() == [2.5]
    assert "2.5–2.5× faster" in F.plot_graph_vs_eager(t).axes[0].get_title(loc="left")
    scaling = {"device_name": "GPU", "configs": {
        "batch_32": {"batch_size": 32, "seq_len": 256, "step_ms_median": 4.0, "floor_ms": 3.0},
        "batch_64": {"batch_size": 64, "seq_len": 256, "step_ms_median": 8.0, "floor_ms": 4.0},
        "nofloor": {"batch_size": 8, "seq_len": 256, "step_ms_median": 1.0}}}
    f = F.floor_table(scaling)
    assert f["floor_share"].tolist() == [0.75, 0.5]
    assert "50–75 %" in F.plot_floor(scaling).axes[0].get_title(loc="left")


def test_flops_table_and_figure_place_each_model_against_the_baseline():
    flops = {"configs": {"transformer": {"step_gflop": 150.0}, "hope": {"step_gflop": 450.0},
                         "titans_linear": {"step_gflop": 300.0}, "only_counted": {"step_gflop": 1.0}}}
    bench = {"device_name": "GPU", "settings": {"baseline": "transformer"}, "configs": {
        "transformer": {"step_ms_median": 3.0, "batch_size": 16, "seq_len": 512},
        "hope": {"step_ms_median": 33.0}, "titans_linear": {"step_ms_median": 6.0}, "only_timed": {"step_ms_median": 1.0}}}
    t = F.flops_table(flops, bench).set_index("config")
    assert list(t.index) == ["transformer", "hope", "titans_linear"]  # in both reports only
    assert t.loc["hope", "flop_ratio"] == 3.0 and t.loc["hope", "time_ratio"] == 11.0
    assert t.loc["transformer", "tflop_per_s"] == 50.0  # 150 GFLOP in 3 ms
    title = F.plot_flops_vs_time(flops, bench).axes[0].get_title(loc="left")
    assert title.startswith("hope: 3.00× the transformer's FLOPs, 11.0× its step time")  # farthest above the diagonal
    with pytest.raises(ValueError, match="baseline 'nested_lstm' must be in both reports"):
        F.flops_table(flops, bench, baseline="nested_lstm")


def test_committed_reports_at_a_revision_and_history():
    hist = F.history_reports("models_06")
    assert hist and all(name.startswith("history/models_06_") for name in hist.values())
    b64 = F.bench_report("models_06_b64")
    same = F.report_at("models_06", F.report_revision(b64))
    assert F.report_revision(same) == F.report_revision(b64)
    with pytest.raises(FileNotFoundError, match="no committed"):
        F.report_at("models_06", "0000000")


def test_bench_quote_records_entries_that_re_read_from_their_file():
    ctx = SimpleNamespace(stem="A1_performance")
    cite.reset(ctx.stem)
    q = F.BenchQuote(ctx, "models_06")
    text = q.value("configs", "hope", "ratio_to_baseline", digits=1, suffix="×")
    want = json.loads((paths.REPO_ROOT / "results" / "bench" / "models_06.json").read_text())
    assert text == f"{want['configs']['hope']['ratio_to_baseline']:.1f}×"
    share = q.ratio(("configs", "hope", "step_ms_median"), ("configs", "transformer", "step_ms_median"),
                    "hope / transformer step time", digits=0, scale=100, suffix=" %")
    assert share.endswith(" %")
    cite.takeaways(ctx, f"- {text}, {share}")
    ledger = json.loads((paths.BUILD / "cited" / f"{ctx.stem}.json").read_text())
    bench, derived = ledger["entries"]
    assert bench["file"] == "results/bench/models_06.json" and bench["field"] == "bench"
    data = json.loads((paths.REPO_ROOT / bench["file"]).read_text())
    assert _at(data, bench["keys"]["path"]) == bench["value"]
    num, den = derived["keys"]["path"]
    assert derived["value"] == _at(data, num) / _at(data, den)
    with pytest.raises(FileNotFoundError):
        F.BenchQuote(ctx, "no_such_report")


def _at(data, path):
    for k in path:
        data = data[k]
    return data


def test_char_losses_of_a_tiny_run_match_its_scale(tmp_path):
    from nlcore.config import apply_overrides, preset
    from nlcore.training.trainer import train

    cfg = apply_overrides(preset("smoke"), ["model.kind=transformer", "steps=3", "model.n_layers=1"])
    train(cfg, tmp_path / "run", progress=False)
    text, bits = hope.char_losses(tmp_path / "run", n_chars=2 * cfg.data.seq_len + 5)
    assert len(bits) == 2 * cfg.data.seq_len and len(text) == len(bits) + 1  # whole windows only
    assert np.isfinite(bits).all() and 1.0 < bits.mean() < 10.0  # an untrained model over a small alphabet
