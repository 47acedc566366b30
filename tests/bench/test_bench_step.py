"""The step-time benchmark harness: runs on CPU in smoke sizes and writes its JSON schema."""

from __future__ import annotations

import argparse
import json

import pytest

from nlcore.bench import step as bench
from nlcore.report.figures.bench import plot_scaling

STEP_KEYS = ("step_ms_median", "step_ms_min", "step_ms_max", "step_ms_iqr", "chars_per_s",
             "peak_mem_bytes", "ratio_to_baseline", "overhead_vs_persistent")


def test_parse_config():
    assert bench.parse_config("seed_persistent") == ("seed_persistent", [])
    assert bench.parse_config("wide=model.d_model=48, model.d_ff=96") == ("wide", ["model.d_model=48",
                                                                                   "model.d_ff=96"])
    name, ov = bench.parse_config("mine=@seed_surprise_hooks,surprise.clip=1")
    assert name == "mine" and ov == bench.NAMED["seed_surprise_hooks"] + ["surprise.clip=1"]
    name, ov = bench.parse_config("c128=@hope,model.cms_chunks=128,256,model.mem_chunk=128")
    assert ov == bench.NAMED["hope"] + ["model.cms_chunks=128,256", "model.mem_chunk=128"]  # a value's comma
    with pytest.raises(KeyError, match="nope"):
        bench.parse_config("nope")
    with pytest.raises(ValueError, match="key=value"):
        bench.parse_config("x=model.d_model")


def test_smoke_bench_writes_the_schema(tmp_path, capsys):
    out = tmp_path / "bench.json"
    specs = bench.DEFAULT + ["nocg=@seed_surprise_reference_nocg", "wide=@seed_persistent,model.d_model=40"]
    args = argparse.Namespace(out=str(out), configs=specs, smoke=True, warmup=1, windows=3, steps=1)
    assert bench.main(args) == 0
    rep = json.loads(out.read_text())
    for key in ("device", "device_name", "torch", "cuda", "cudnn", "git", "command", "environment", "settings"):
        assert key in rep, key
    assert "revision" in rep["git"] and rep["settings"]["baseline"] == "seed_persistent"
    assert list(rep["configs"]) == bench.DEFAULT + ["nocg", "wide"]
    for name, c in rep["configs"].items():
        for key in STEP_KEYS:
            assert key in c, (name, key)
        assert len(c["step_ms_windows"]) == 3
        assert 0 < c["step_ms_min"] <= c["step_ms_median"] <= c["step_ms_max"]
        assert c["chars_per_s"] == pytest.approx(8 * 32 / (c["step_ms_median"] / 1e3))
    base = rep["configs"]["seed_persistent"]
    assert base["ratio_to_baseline"] == 1.0 and base["overhead_vs_persistent"] == 0.0
    assert rep["configs"]["wide"]["params"] > base["params"]
    assert rep["configs"]["plain_lstm"]["params"] < base["params"]
    # the recurrence floor: one per LSTM shape, and every step as a multiple of its own
    assert {(f["batch_size"], f["d_in"]) for f in rep["floors"]} == {(8, 32), (8, 40)}
    for name, c in rep["configs"].items():
        assert c["ratio_to_floor"] == pytest.approx(c["step_ms_median"] / c["floor_ms"]), name
        assert c["floor_ms"] > 0
    assert "seed_surprise_hooks" in capsys.readouterr().out  # the table


def test_bench_only_key_reaches_the_trainer():
    t = bench.build_trainer(bench.NAMED["seed_surprise_reference_nocg"], smoke=True, steps=2)
    assert t.surprise is not None and t.surprise.create_graph is False and t.cfg.surprise.impl == "reference"
    with pytest.raises(ValueError, match="baseline"):
        bench.run(["seed_reset"], smoke=True, warmup=0, windows=1, steps=1, baseline="seed_persistent")


def test_plot_scaling_draws_the_floor_where_measured():
    import matplotlib

    matplotlib.use("Agg")
    cfg = {"chars_per_s": 2e6, "batch_size": 32, "seq_len": 256}
    rep = {"device_name": "test", "settings": {"windows": 1},
           "configs": {f"{k}_{v}": dict(cfg, floor_ms=2.0) for k, pairs in bench.SCALING.items() for _, v in pairs}}
    fig = plot_scaling(rep)
    assert [len(ax.lines) for ax in fig.axes] == [2, 2, 2]  # the step and its floor in every panel
    floor = fig.axes[0].lines[1].get_ydata()
    assert floor[0] == pytest.approx(32 * 256 / 2.0 / 1e3)  # M chars/s at the floor
    for c in rep["configs"].values():
        del c["floor_ms"]  # reports from before the floor existed: the step alone
    assert [len(ax.lines) for ax in plot_scaling(rep).axes] == [1, 1, 1]



def test_the_06_models_are_named_as_the_committed_report_ran_them():
    """The 06 step-time report (results/bench/models_06.json) ran exactly the named MODELS_06
    configurations, so `--configs titans` etc. reproduce it."""
    import json
    from pathlib import Path

    report = json.loads((Path(__file__).resolve().parents[2] / "results/bench/models_06.json").read_text())
    assert set(report["configs"]) == set(bench.MODELS_06)
    renamed = {"fast_path=off": "cuda_graph=off"}  # the report predates the field's rename
    for name, c in report["configs"].items():
        assert [renamed.get(o, o) for o in c["overrides"]] == bench.MODELS_06[name], name
        assert bench.parse_config(name) == (name, bench.MODELS_06[name])


def test_an_experiment_configuration_is_benched_with_its_runs_overrides():
    from nlcore.experiments.registry import EXPERIMENTS

    name, ov = bench.parse_config("07_scaling:hope_33M")
    gcs, _, common = EXPERIMENTS["07_scaling"].grid("full")
    assert name == "07_scaling:hope_33M" and ov == [*common, *next(g for g in gcs if g.label == "hope_33M").overrides]
    assert "steps=4000" in ov and "model.kind=hope" in ov
    assert bench.parse_config("07_scaling:hope_8.2M", smoke=True)[1] != bench.parse_config("07_scaling:hope_8.2M")[1]
    with pytest.raises(KeyError, match="has no configuration 'nope'"):
        bench.parse_config("07_scaling:nope")
    with pytest.raises(KeyError, match="unknown experiment"):
        bench.parse_config("07_nope:hope")
