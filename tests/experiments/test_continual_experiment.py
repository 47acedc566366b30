"""The continual-learning probe as a registered experiment: 08_continual resolves in both modes,
and a grid of probes runs (in-process and as `python -m nlcore continual` subprocesses) and
aggregates forgetting, learning and every evaluation point."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from nlcore.config import apply_overrides, preset
from nlcore.experiments import EXPERIMENTS, GridConfig, PhaseB, run_grid
from nlcore.paths import REPO_ROOT
from nlcore.training.continual import eval_steps, phase_b_config

TINY = ("steps=8", "ckpt_every=0", "log_every=4", "eval_every=0", "warmup=2", "data.synth_chars=20000",
        "data.batch_size=4", "data.seq_len=16")
LABELS = ["nested_lstm", "nested_lstm_cms_off", "hope", "hope_outer", "hope_static", "transformer", "titans_linear"]


@pytest.mark.parametrize("mode", ["smoke", "full"])
def test_the_registered_probe_resolves(mode):
    exp = EXPERIMENTS["08_continual"]
    gcs, seeds, common = exp.grid(mode)
    phase_b = exp.mode(mode).phase_b
    assert [g.label for g in gcs] == LABELS and seeds == ([0] if mode == "smoke" else [0, 1, 2])
    assert phase_b.corpus == ("synthetic" if mode == "smoke" else "tinyshakespeare")
    eval_steps(phase_b.steps, phase_b.eval_points)
    for gc in gcs:
        cfg_a = apply_overrides(preset(gc.preset), [*common, *gc.overrides])
        cfg_b = phase_b_config(cfg_a, phase_b.corpus, phase_b.steps, phase_b.overrides)
        assert cfg_b.model == cfg_a.model and cfg_b.steps == phase_b.steps
    if mode == "full":  # phase A is 06's full run of the same configuration
        gcs06, seeds06, common06 = EXPERIMENTS["06_hope_titans"].grid("full")
        assert common == common06 and seeds == seeds06
        same = {g.label: g.overrides for g in gcs06}
        for gc in gcs:
            if gc.label in same and gc.label != "nested_lstm":  # 08 names its CMS chunks explicitly
                assert gc.overrides == same[gc.label], gc.label


@pytest.mark.parametrize("jobs", [0, 1])
def test_a_grid_of_probes_runs_and_aggregates(tmp_path, monkeypatch, jobs):
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # the subprocesses import this checkout
    phase_b = PhaseB("synthetic", steps=4, eval_points=2, overrides=("data.synth_seed=1",))
    df = run_grid("t", [GridConfig("a", "smoke", TINY)], [0], tmp_path, jobs=jobs, echo=False, phase_b=phase_b)
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert set(df.metric) == set(runs.metric)
    s = json.loads((tmp_path / "runs" / "a" / "seed0" / "summary.json").read_text())
    values = dict(zip(runs.metric, runs.value))
    assert values["forgetting_bpc"] == pytest.approx(s["forgetting_bpc"])
    assert {f"{c}_valid_bpc_step{k}" for c in "ab" for k in (0, 2, 4)} <= set(values)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert any(r["metric"] == "learning_bpc" and r["n_seeds"] == 1 for r in summary)
