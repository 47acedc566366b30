"""Grids of configurations x seeds: runs, skip-when-done, aggregation, the registry."""

from __future__ import annotations

import json

import pytest

from nlcore.config import apply_overrides, preset
from nlcore.experiments import EXPERIMENTS, GridConfig, parse_config_arg, run_grid

TINY = ("steps=6", "log_every=3", "eval_every=0", "ckpt_every=0", "data.synth_chars=20000",
        "data.batch_size=4", "data.seq_len=16")


def test_grid_runs_aggregates_and_skips_finished_runs(tmp_path):
    gcs = [GridConfig("a", "smoke", TINY), GridConfig("b", "smoke", (*TINY, "cms.levels.fast.lr=1e-3"))]
    df = run_grid("t", gcs, [0, 1], tmp_path, jobs=0, echo=False)
    assert set(df.config) == {"a", "b"} and set(df.seed) == {0, 1}
    summary = json.loads((tmp_path / "summary.json").read_text())
    rec = next(r for r in summary if r["config"] == "a" and r["metric"] == "valid_bpc")
    vals = sorted(df[(df.config == "a") & (df.metric == "valid_bpc")].value)
    assert rec["n_seeds"] == 2 and rec["mean"] == pytest.approx(sum(vals) / 2)
    assert rec["ci_low"] <= rec["mean"] <= rec["ci_high"]
    marker = tmp_path / "runs" / "a" / "seed0" / "summary.json"
    before = marker.stat().st_mtime_ns
    run_grid("t", gcs, [0, 1], tmp_path, jobs=0, echo=False)  # nothing left to run
    assert marker.stat().st_mtime_ns == before


def test_config_arg_parsing_and_errors():
    gc = parse_config_arg("lr.small@smoke: cms.levels.fast.lr=1e-3 steps=5", "seed")
    assert gc == GridConfig("lr.small", "smoke", ("cms.levels.fast.lr=1e-3", "steps=5"))
    with pytest.raises(ValueError, match="label"):
        parse_config_arg("bad label: steps=5", "seed")
    with pytest.raises(KeyError, match="turbo"):
        parse_config_arg("x: cms.levels.turbo.lr=1", "seed")


@pytest.mark.parametrize("stem", sorted(EXPERIMENTS))
@pytest.mark.parametrize("mode", ["smoke", "full"])
def test_every_registered_configuration_validates(stem, mode):
    gcs, seeds, common = EXPERIMENTS[stem].grid(mode)
    assert gcs and seeds
    for gc in gcs:
        apply_overrides(preset(gc.preset), [*common, *gc.overrides])
