"""Grids of configurations x seeds: runs, skip-when-done, aggregation, the registry."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from nlcore.config import apply_overrides, preset
from nlcore.experiments import (
    EXPERIMENTS,
    Experiment,
    GridConfig,
    Mode,
    parse_config_arg,
    run_experiment,
    run_grid,
)
from nlcore.experiments.experiment import config

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


# The numbers a mode holds (`Mode`, `ModelSize`): the only keys in which smoke and full may differ,
# with the corpus a mode names (smoke reads the synthetic one in its place).
NUMBERS = {"steps", "warmup", "data.seq_len", "data.batch_size", "data.synth_chars", "model.mem_chunk",
           "model.d_model", "model.d_ff", "model.n_layers", "model.n_heads", "model.cms_chunks", "data.corpus"}


@pytest.mark.parametrize("stem", sorted(EXPERIMENTS))
def test_smoke_and_full_share_every_lever_and_differ_only_in_numbers(stem):
    exp = EXPERIMENTS[stem]
    (full, _, full_common), (smoke, _, smoke_common) = exp.grid("full"), exp.grid("smoke")
    by_label = {gc.label: gc for gc in full}
    assert [gc.label for gc in smoke] == [label for label in exp.labels
                                          if exp.smoke.labels is None or label in exp.smoke.labels]
    for gc in smoke:
        f = dict(o.split("=", 1) for o in (*full_common, *by_label[gc.label].overrides))
        s = dict(o.split("=", 1) for o in (*smoke_common, *gc.overrides))
        differ = {k for k in f.keys() | s.keys() if f.get(k) != s.get(k)}
        assert differ <= NUMBERS, (gc.label, sorted(differ - NUMBERS))


def test_a_mode_renders_its_numbers_and_a_model_its_size():
    from nlcore.experiments import ModelSize

    sizes = {"full": ModelSize(64, 128, n_layers=2, cms_chunks=(8, 16)), "smoke": ModelSize(16, 32)}
    exp = Experiment("x", (config("a", "state.reset=never", model="m"), config("b", long_window=True)),
                     full=Mode("seed", seeds=(0, 1), steps=100, seq_len=128, long_seq_len=256,
                               sizes={"m": sizes["full"]}),
                     smoke=Mode("smoke", seeds=(0,), steps=5, long_seq_len=64, sizes={"m": sizes["smoke"]}),
                     common=("eval_every=0",), models={"m": ("model.kind=hope",)}).validate()
    gcs, seeds, common = exp.grid("full")
    assert seeds == [0, 1] and common == ("steps=100", "data.seq_len=128", "eval_every=0")
    assert gcs[0].overrides == ("model.kind=hope", "model.d_model=64", "model.d_ff=128", "model.n_layers=2",
                                "model.cms_chunks=8,16", "state.reset=never")
    assert gcs[1].overrides == ("data.seq_len=256",)  # after the common window: the long one wins
    gcs, _, common = exp.grid("smoke")
    assert common == ("steps=5", "eval_every=0")
    assert [g.overrides for g in gcs] == [("model.kind=hope", "model.d_model=16", "model.d_ff=32",
                                           "state.reset=never"), ("data.seq_len=64",)]
    with pytest.raises(ValueError, match="^mode:"):
        exp.grid("medium")


@pytest.mark.parametrize("change, field", [
    (dict(smoke=Mode("smoke", seeds=(0,), labels=("nope",))), "x.smoke.labels"),
    (dict(full=Mode("seed", seeds=())), "x.full.seeds"),
    (dict(configs=(config("a"), config("a"))), "x.configs"),
    (dict(configs=(config("a", model="m"),)), "x.configs.a.model"),
    (dict(configs=(config("a", model="m"),), models={"m": ()}), "x.smoke.sizes"),
    (dict(configs=(config("a", long_window=True),)), "x.smoke.long_seq_len"),
    (dict(configs=(config("a", budget="big"),)), "x.smoke.budgets"),
])
def test_experiment_validation_names_the_field(change, field):
    with pytest.raises(ValueError, match=rf"^{re.escape(field)}:"):
        Experiment(**{**dict(stem="x", configs=(config("a"),)), **change}).validate()


def test_only_seeds_runs_a_subset_and_refuses_unknown_seeds(tmp_path):
    with pytest.raises(KeyError, match=r"seeds \[7\] are not among"):
        run_experiment("06_hope_titans", "smoke", out=tmp_path, only=["transformer"], only_seeds=[7], echo=False)
    runs = run_experiment("06_hope_titans", "smoke", out=tmp_path, only=["transformer"], only_seeds=[0], echo=False)
    assert sorted(runs["seed"].unique()) == [0]
    assert sorted(p.name for p in (tmp_path / "runs" / "transformer").iterdir()) == ["seed0"]


def test_partial_calls_aggregate_every_finished_run_and_name_its_seeds(tmp_path):
    """Two partial calls into one folder: the aggregate and meta.json hold both calls' runs, not only
    the last call's."""
    from nlcore.results import read_json

    run_experiment("06_hope_titans", "smoke", out=tmp_path, only=["transformer"], only_seeds=[0], echo=False)
    runs = run_experiment("06_hope_titans", "smoke", out=tmp_path, only=["hope"], only_seeds=[0], echo=False)
    meta = read_json(tmp_path / "meta.json")
    assert meta["seeds"] == [0] and sorted(meta["configs"]) == ["hope", "transformer"]
    assert set(runs["config"]) == {"hope", "transformer"}


def test_aggregate_only_names_the_runs_it_finds_and_refuses_an_empty_folder(tmp_path):
    """Runs made elsewhere and copied into one folder: --aggregate-only trains nothing and its
    meta.json names the configurations present, not every registered one."""
    from nlcore.errors import RunDirError
    from nlcore.results import read_json

    with pytest.raises(RunDirError, match="no finished runs"):
        run_experiment("06_hope_titans", "smoke", out=tmp_path, aggregate_only=True, echo=False)
    run_experiment("06_hope_titans", "smoke", out=tmp_path, only=["transformer"], only_seeds=[0], echo=False)
    (tmp_path / "summary.json").unlink()
    runs = run_experiment("06_hope_titans", "smoke", out=tmp_path, aggregate_only=True, echo=False)
    assert set(runs["config"]) == {"transformer"} and (tmp_path / "summary.json").is_file()
    assert sorted(read_json(tmp_path / "meta.json")["configs"]) == ["transformer"]


def test_a_run_that_diverges_on_held_out_text_is_reported_not_a_crash(tmp_path, monkeypatch, capsys):
    from nlcore.training.trainer import Trainer

    monkeypatch.setattr(Trainer, "run", lambda self, **kw: {"valid_bpc": float("nan"), "test_bpc": None})
    run_grid("t", [GridConfig("a", "smoke", TINY)], [0], tmp_path, jobs=0, echo=True)
    assert "[t] done a seed 0: valid non-finite bpc" in capsys.readouterr().out


def test_a_diverged_run_is_kept_as_a_result_and_not_run_again(tmp_path, capsys):
    gcs = [GridConfig("a", "smoke", TINY)]
    run_grid("t", gcs, [0, 1], tmp_path, jobs=0, echo=False)
    summ = tmp_path / "runs" / "a" / "seed1" / "summary.json"
    summ.write_text(json.dumps({"status": "diverged", "ended_at_step": 4, "message": "training diverged"}))
    before = summ.read_text()
    df = run_grid("t", gcs, [0, 1], tmp_path, jobs=0)
    assert summ.read_text() == before
    assert "keep a seed 1: it diverged" in capsys.readouterr().out
    assert set(df[df.metric == "valid_bpc"].seed) == {0}  # aggregated without it


class _Process:
    """Stands in for a training process of the grid: `outcome` "diverged" writes the summary a
    run that stopped on a non-finite loss writes, then exits 1; "crashed" exits 1 without one."""

    outcome = "diverged"

    def __init__(self, cmd, stdout, **_):
        assert cmd[1:4] == ["-m", "nlcore", "train"], cmd
        run_dir = Path(cmd[cmd.index("--out") + 1])
        stdout.write("error: training diverged: non-finite loss at step 3\n")
        stdout.flush()
        if self.outcome == "diverged":
            (run_dir / "summary.json").write_text(json.dumps(
                {"status": "diverged", "ended_at_step": 3, "message": "training diverged: non-finite loss at step 3"}))
        self.returncode = 1

    def poll(self):
        return self.returncode


def test_a_run_that_diverges_in_a_process_is_a_result_and_a_crash_a_named_error(tmp_path, monkeypatch, capsys):
    from nlcore.errors import RunFailedError
    from nlcore.experiments import grid

    gcs = [GridConfig("a", "smoke", TINY)]
    run_grid("t", gcs, [0], tmp_path, jobs=0, echo=False)  # seed 0 finishes in-process
    monkeypatch.setattr(grid, "subprocess", SimpleNamespace(Popen=_Process, STDOUT=subprocess.STDOUT))
    monkeypatch.setattr(grid.time, "sleep", lambda s: None)
    df = run_grid("t", gcs, [0, 1], tmp_path, jobs=1)  # seed 1 "diverges" in its process
    assert "[t] diverged a seed 1 at step 3: kept as a result" in capsys.readouterr().out
    assert set(df[df.metric == "valid_bpc"].seed) == {0} and (tmp_path / "summary.json").is_file()
    monkeypatch.setattr(_Process, "outcome", "crashed")
    with pytest.raises(RunFailedError, match=r"1 run\(s\) stopped without a result: a seed 2: see .*seed2/train.log"):
        run_grid("t", gcs, [0, 1, 2], tmp_path, jobs=1)


class _Finishing(_Process):
    """A run that ends (as a divergence, a result) one poll after the grid asked it to stop."""

    def __init__(self, cmd, stdout, **kw):
        super().__init__(cmd, stdout, **kw)
        self.polls = 0

    def poll(self):
        self.polls += 1
        return None if self.polls == 1 else self.returncode

    def terminate(self):
        pass


def test_a_sigterm_while_the_last_runs_end_leaves_a_complete_grid_not_an_error(tmp_path, monkeypatch, capsys):
    import os
    import signal
    import time

    from nlcore.experiments import grid

    monkeypatch.setattr(grid, "subprocess", SimpleNamespace(Popen=_Finishing, STDOUT=subprocess.STDOUT))
    signalled = []

    def sleep(seconds):  # the grid's own pause: one SIGTERM, while its handler is installed
        if not signalled:
            signalled.append(seconds)
            os.kill(os.getpid(), signal.SIGTERM)

    # grid's name for the module, not time.sleep itself: other threads of the process keep sleeping
    monkeypatch.setattr(grid, "time", SimpleNamespace(sleep=sleep, time=time.time))
    df = run_grid("t", [GridConfig("a", "smoke", TINY)], [0], tmp_path, jobs=1)
    out = capsys.readouterr().out
    assert "[t] SIGTERM: stopping 1 run(s) at their next logged step, 0 not started" in out
    assert "[t] diverged a seed 0 at step 3: kept as a result" in out
    assert (tmp_path / "summary.json").is_file() and df is not None  # aggregated, returned, not raised
    assert grid.stop_message("t", True, 0, 0) is None and grid.stop_message("t", False, 2, 1) is None
    assert grid.stop_message("t", True, 1, 2) == ("t stopped by SIGTERM: 1 run(s) kept their checkpoints and 2 "
                                                 "did not start; the same command resumes them")


def test_sigterm_stops_a_grid_keeps_checkpoints_and_the_same_command_resumes(tmp_path):
    import os
    import signal
    import sys
    import time

    out = tmp_path / "g"
    cmd = [sys.executable, "-m", "nlcore", "grid", "--name", "g", "--preset", "smoke", "--jobs", "1",
           "--seeds", "0", "1", "--out", str(out), "--config",
           "a: steps=400 log_every=10 eval_every=0 ckpt_every=0 data.synth_chars=20000 data.batch_size=4 data.seq_len=16"]
    grid = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "runs" / "a" / "seed0" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.05)
    grid.send_signal(signal.SIGTERM)  # the grid alone, as `timeout` without its process group
    stdout, stderr = grid.communicate(timeout=120)
    assert grid.returncode == 1, stderr
    assert stderr.strip().splitlines()[-1] == ("error: g stopped by SIGTERM: 1 run(s) kept their checkpoints and "
                                               "1 did not start; the same command resumes them")
    assert re.search(r"\[g\] stopped a seed 0 at step \d+0: its checkpoint is kept", stdout)
    run = out / "runs" / "a" / "seed0"
    ended = json.loads((run / "summary.json").read_text())
    assert ended["status"] == "stopped" and 20 <= ended["ended_at_step"] < 400
    assert (run / "checkpoint.pt").is_file() and not (out / "runs" / "a" / "seed1").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert again.returncode == 0, again.stderr
    assert json.loads((run / "meta.json").read_text())["resumed_at_step"] == ended["ended_at_step"]
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    assert (out / "runs" / "a" / "seed1" / "summary.json").is_file()
