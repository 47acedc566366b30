"""The scaling study (07): its registered experiments resolve to 06's models at the intended
budgets, widths, corpus and learning rates; one configuration of each runs in smoke on a CPU; the
sweep's choice of rate and the context table read what the runs wrote."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from nlcore.config import apply_overrides, preset, to_dict
from nlcore.errors import CheckpointError, RunDirError
from nlcore.experiments import EXPERIMENTS, run_experiment
from nlcore.experiments.registry import (
    BUDGETS_07,
    LR_06,
    LR_07,
    MODELS_07,
    SIZES_06,
    SIZES_07_WIDE,
)
from nlcore.experiments.scaling import best_lrs, context_of_run, context_table, ranking_table
from nlcore.training.trainer import model_for

STEMS = ("07_lr_sweep", "07_scaling", "07_width", "07_shakespeare")
CHARS = {"8.2M": 8_192_000, "33M": 32_768_000, "131M": 131_072_000}  # 16 x 512 characters a step


def _configs(stem: str, mode: str) -> dict:
    """label -> resolved TrainConfig of every configuration of `stem` in `mode`."""
    gcs, _, common = EXPERIMENTS[stem].grid(mode)
    return {gc.label: apply_overrides(preset(gc.preset), [*common, *gc.overrides]) for gc in gcs}


def _fast_lr(cfg) -> float:
    return next(lv.lr for lv in cfg.cms.levels if lv.name == "fast")


def _chars(cfg) -> int:
    return cfg.steps * cfg.data.batch_size * cfg.data.seq_len


@pytest.mark.parametrize("mode", ["smoke", "full"])
@pytest.mark.parametrize("stem", STEMS)
def test_every_07_configuration_resolves(stem, mode):
    cfgs = _configs(stem, mode)
    assert cfgs
    seeds = EXPERIMENTS[stem].grid(mode)[1]
    assert seeds == ([0] if mode == "smoke" or stem == "07_lr_sweep" else [0, 1, 2])


def test_the_budgets_train_the_intended_characters_with_their_own_schedule():
    cfgs = _configs("07_scaling", "full")
    assert sorted(cfgs) == sorted(f"{m}_{b}" for m in MODELS_07 for b in BUDGETS_07)
    for label, cfg in cfgs.items():
        budget = label.rsplit("_", 1)[1]
        assert _chars(cfg) == CHARS[budget] and cfg.steps == BUDGETS_07[budget], label
        assert cfg.warmup == 100 and cfg.schedule == "cosine" and cfg.data.corpus == "wikitext2"
    assert {_chars(c) for c in _configs("07_width", "full").values()} == {CHARS["33M"]}
    assert {_chars(c) for c in _configs("07_shakespeare", "full").values()} == {CHARS["8.2M"]}
    assert {_chars(c) for c in _configs("07_lr_sweep", "full").values()} == {CHARS["8.2M"]}
    smoke = _configs("07_scaling", "smoke")
    assert smoke["hope_33M"].steps == 2 * smoke["hope_8.2M"].steps


def test_each_07_model_is_06s_configuration_of_the_same_label_but_for_its_rate():
    ours = _configs("07_scaling", "full")
    theirs = _configs("06_hope_titans", "full")
    for m in MODELS_07:
        assert _fast_lr(ours[f"{m}_8.2M"]) == pytest.approx(LR_07[m])
        a = to_dict(ours[f"{m}_8.2M"])
        a["cms"]["levels"][0]["lr"] = _fast_lr(theirs[m])  # levels fast to slow
        assert a == to_dict(theirs[m]), m


def test_the_sweep_tries_at_least_three_rates_around_06s_per_model():
    cfgs = _configs("07_lr_sweep", "full")
    for m in MODELS_07:
        lrs = sorted(_fast_lr(c) for label, c in cfgs.items() if label.rsplit("_lr", 1)[0] == m)
        base = LR_06["nested_lstm" if m == "nested_lstm" else m.split("_")[0]]
        assert len(lrs) >= 3 and lrs[0] < base < lrs[-1] and base in lrs, m


def test_the_chosen_rates_are_those_the_other_07_experiments_train_with():
    for stem in ("07_width", "07_shakespeare"):
        for m, cfg in _configs(stem, "full").items():
            assert _fast_lr(cfg) == pytest.approx(LR_07[m]), (stem, m)


def test_the_trained_rates_are_the_committed_sweeps_choice():
    from nlcore import paths
    from nlcore.experiments.scaling import best_lrs

    sweep = paths.REPO_ROOT / "results" / "07_lr_sweep"
    assert (sweep / "runs.csv").is_file(), "results/07_lr_sweep is committed"
    assert best_lrs(sweep) == pytest.approx(LR_07)


def test_shakespeare_reads_tiny_shakespeare():
    assert {c.data.corpus for c in _configs("07_shakespeare", "full").values()} == {"tinyshakespeare"}
    assert {c.data.corpus for c in _configs("07_shakespeare", "smoke").values()} == {"synthetic"}


VOCAB = 284  # WikiText-2's train characters plus the unknown id


def _params(stem: str, label: str) -> int:
    cfg = _configs(stem, "full")[label]
    return sum(p.numel() for p in model_for(cfg, VOCAB).parameters())


@pytest.mark.parametrize("m", MODELS_07)
def test_the_wide_models_have_about_four_times_the_parameters(m):
    wide, base = _params("07_width", m), _params("07_scaling", f"{m}_8.2M")
    assert 12.5e6 <= wide <= 13.0e6 and 3.1e6 <= base <= 3.4e6, (wide, base)
    assert 3.8 <= wide / base <= 4.1
    model = "titans" if m.startswith("titans") else "hope" if m.startswith("hope") else m
    assert SIZES_07_WIDE["full"][model].d_model == 2 * SIZES_06["full"][model].d_model


@pytest.mark.parametrize("stem", STEMS)
def test_one_smoke_configuration_of_each_runs_on_a_cpu(stem, tmp_path):
    label = EXPERIMENTS[stem].smoke.labels[0]
    run_experiment(stem, "smoke", out=tmp_path, echo=False, only=[label])
    run = tmp_path / "runs" / label / "seed0"
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "finished" and s["steps"] == _configs(stem, "smoke")[label].steps
    if stem == "07_scaling":  # and the long-context measurement of a finished run
        r = context_of_run(run, "valid")
        assert r["documents"] > 1 and sum(r["count"]) == r["targets"]
        with pytest.raises(RunDirError, match="--overwrite"):
            context_of_run(run, "valid")
        df = context_table(tmp_path, "valid")
        assert set(df.config) == {label} and df["count"].sum() == r["targets"]
        assert (tmp_path / "context_valid.csv").is_file()
        with pytest.raises(CheckpointError, match="finished training"):
            context_of_run(tmp_path / "nothing", "valid")
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "status": "diverged"}))
        with pytest.raises(RunDirError, match="has not finished training"):
            context_of_run(run, "valid", overwrite=True)


def test_best_lrs_picks_the_lowest_mean_valid_bpc(tmp_path, capsys):
    rows = [("hope_lr0.001", 0, 1.7), ("hope_lr0.001", 1, 1.5), ("hope_lr0.002", 0, 1.65), ("hope_lr0.004", 0, 1.8),
            ("titans_linear_lr0.001", 0, 1.9), ("titans_linear_lr0.002", 0, 1.8)]
    pd.DataFrame([{"config": c, "seed": s, "metric": "valid_bpc", "value": v} for c, s, v in rows]
                 + [{"config": "hope_lr0.004", "seed": 0, "metric": "test_bpc", "value": 0.1}]
                 ).to_csv(tmp_path / "runs.csv", index=False)
    assert best_lrs(tmp_path) == {"hope": 0.001, "titans_linear": 0.002}
    assert "titans_linear: the best rate 0.002 is at the edge" in capsys.readouterr().err
    with pytest.raises(RunDirError, match="runs.csv"):
        best_lrs(tmp_path / "missing")


def test_ranking_table_orders_by_mean_and_pairs_over_shared_seeds(tmp_path):
    rows = [("a_33M", 0, 1.50), ("a_33M", 1, 1.52), ("a_33M", 2, 1.54),
            ("b_33M", 0, 1.60), ("b_33M", 1, 1.63), ("c_33M", 0, 1.40), ("c_33M", 1, 1.42),
            ("c_33M", 2, 1.44), ("a_8.2M", 0, 1.9)]
    pd.DataFrame([{"config": c, "metric": m, "seed": s, "value": v + (0.01 if m == "valid_bpc" else 0)}
                  for c, s, v in rows for m in ("valid_bpc", "test_bpc")]).to_csv(tmp_path / "runs.csv", index=False)
    for c, s in [("a_33M", 0), ("a_33M", 1), ("a_33M", 2), ("b_33M", 2)]:
        (tmp_path / "runs" / c / f"seed{s}").mkdir(parents=True)
    (tmp_path / "runs" / "b_33M" / "seed2" / "summary.json").write_text('{"status": "diverged"}')
    lines = ranking_table(tmp_path, "33M").splitlines()
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["`c_33M`", "`a_33M`", "`b_33M`"]
    assert "minus `c_33M`" in lines[0] and "a_8.2M" not in "".join(lines)
    assert "| 1.4000, 1.4200, 1.4400 |" in lines[2] and "| 1.420 [" in lines[2]
    assert "+0.100 [+0.100, +0.100] (n=3)" in lines[3]  # a - c is 0.1 on every seed
    assert "1.6000, 1.6300, diverged" in lines[4]  # seed 2's summary says how it ended
    (tmp_path / "runs" / "b_33M" / "seed2" / "summary.json").unlink()
    assert "1.6000, 1.6300, unfinished" in ranking_table(tmp_path, "33M")  # a folder, no summary
    b_minus_c = (0.20 + 0.21) / 2
    assert f"+{b_minus_c:.3f} [" in lines[4] and "(n=2)" in lines[4]  # paired over seeds 0 and 1 only
    with pytest.raises(RunDirError, match="131M"):
        ranking_table(tmp_path, "131M")
