"""Multi-seed experiments: a grid of named configurations x seeds, run and aggregated.

Each (configuration, seed) is one `python -m nlcore train` run in its own directory
``<out>/runs/<config>/seed<k>/`` (its own meta.json, metrics.jsonl, summary.json), started as a
subprocess so several small runs can share one GPU. A finished run is not run again, an
interrupted one resumes from its checkpoint (one stopped before its first checkpoint starts
over), so nothing is lost on a crash. A diverged run is a result too: it is kept, not run again.
With a `PhaseB`, each run is instead a continual-learning probe (nlcore.training.continual,
`python -m nlcore continual`): the configuration trains on its corpus, then continues on corpus B;
its directory holds phase_a/, phase_b/ and the probe's summary.
The experiment is then aggregated into ``<out>/runs.csv`` (tidy), ``<out>/summary.json``
(mean and interval across seeds per configuration and metric, `nlcore.stats.summarize`) and
``<out>/meta.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nlcore.config import apply_overrides, preset
from nlcore.errors import RunFailedError, StoppedError
from nlcore.training import rundir
from nlcore.training.checkpoint import CHECKPOINT_NAME

METRICS = ("valid_bpc", "test_bpc", "train_loss_last100", "train_ppl_last100", "chars_per_s",
           "valid_bpc_dynamic", "test_bpc_dynamic")  # the last two only where dynamic_eval_lr > 0
# A probe's numbers (nlcore.training.continual): corpora a and b after phase A and at the end,
# forgetting and learning; each evaluation point adds a_valid_bpc_step<s> and b_valid_bpc_step<s>.
PROBE_METRICS = tuple(f"{c}_{split}_bpc_{when}" for c in "ab" for split in ("valid", "test")
                      for when in ("after_a", "end")) + ("forgetting_bpc", "learning_bpc",
                                                         "forgetting_test_bpc", "learning_test_bpc")


@dataclass(frozen=True)
class GridConfig:
    label: str
    preset: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class PhaseB:
    """A probe's second phase: `steps` steps on `corpus` (then `overrides` on phase B only),
    evaluated at `eval_points` points."""

    corpus: str
    steps: int
    eval_points: int
    overrides: tuple[str, ...] = ()

    def cli_args(self) -> list[str]:
        return ["--corpus-b", self.corpus, "--steps-b", str(self.steps), "--eval-points", str(self.eval_points),
                *[a for o in self.overrides for a in ("--set-b", o)]]


def parse_config_arg(arg: str, default_preset: str) -> GridConfig:
    """'label: key=v key=v' or 'label@preset: key=v ...' -> GridConfig (validated now)."""
    head, _, rest = arg.partition(":")
    label, _, pre = head.strip().partition("@")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", label or ""):
        raise ValueError(f"--config: bad label {label!r} (letters, digits, '.', '-' and '_')")
    gc = GridConfig(label, pre or default_preset, tuple(shlex.split(rest)))
    apply_overrides(preset(gc.preset), list(gc.overrides))  # fail early on bad keys
    return gc


def run_grid(name: str, configs: list[GridConfig], seeds: list[int], out: Path, *, jobs: int = 1,
             common: tuple[str, ...] = (), python: str = sys.executable, echo: bool = True,
             phase_b: PhaseB | None = None) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    todo = []
    for gc in configs:
        for seed in seeds:
            run_dir = out / "runs" / gc.label / f"seed{seed}"
            status = rundir.status(run_dir)
            if status == "diverged" and echo:  # an outcome like any other: a rerun could flip it unseen
                print(f"[{name}] keep {gc.label} seed {seed}: it diverged (remove {run_dir} to run it again)",
                      flush=True)
            if status in ("finished", "diverged"):
                continue
            # continue from a checkpoint; a run that stopped before its first one starts over
            sets = [*common, *gc.overrides, f"seed={seed}"]
            cmd = [python, "-m", "nlcore", "train" if phase_b is None else "continual", "--preset", gc.preset,
                   "--out", str(run_dir), _resume_flag(run_dir, phase_b), "--no-progress",
                   *[a for s in sets for a in ("--set", s)], *(phase_b.cli_args() if phase_b else ())]
            todo.append((gc.label, seed, run_dir, cmd))
    t0 = time.time()
    if jobs == 0:  # in-process, sequential (smoke mode: no interpreter start-up per run)
        from nlcore.training.trainer import Trainer

        for label, seed, run_dir, cmd in todo:
            gc = next(g for g in configs if g.label == label)
            cfg = apply_overrides(preset(gc.preset), [*common, *gc.overrides, f"seed={seed}"])
            resume = _resume_flag(run_dir, phase_b) == "--resume"
            command = " ".join(shlex.quote(a) for a in cmd[1:])
            if phase_b is not None:
                from nlcore.training.continual import run_continual

                s = run_continual(cfg, phase_b.steps, run_dir, corpus_b=phase_b.corpus,
                                  eval_points=phase_b.eval_points, set_b=phase_b.overrides, resume=resume,
                                  overwrite=not resume, command=command, progress=False)
                if echo:
                    print(f"[{name}] done {label} seed {seed}: forgetting {s['forgetting_bpc']:+.4f} learning "
                          f"{s['learning_bpc']:+.4f} bpc ({time.time() - t0:.0f} s)", flush=True)
                continue
            s = Trainer(cfg, run_dir, command=command, progress=False).run(resume=resume, overwrite=not resume)
            if echo:
                print(f"[{name}] done {label} seed {seed}: valid {_bpc(s['valid_bpc'])} bpc ({time.time() - t0:.0f} s)",
                      flush=True)
        todo = []
    running: list[tuple[str, int, Path, subprocess.Popen]] = []
    failures, stopped, unstarted, terminated = [], [], 0, False
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with rundir.StopSignal() as sigterm:
        while todo or running:
            if sigterm.asked and not terminated:  # each run stops at its next logged step; none starts
                terminated, unstarted, todo = True, len(todo), []
                for *_, proc in running:
                    proc.terminate()
                print(f"[{name}] SIGTERM: stopping {len(running)} run(s) at their next logged step, "
                      f"{unstarted} not started", flush=True)
            while todo and len(running) < jobs:
                label, seed, run_dir, cmd = todo.pop(0)
                run_dir.mkdir(parents=True, exist_ok=True)
                with open(run_dir / "train.log", "w") as log:  # the child holds its own copy of the handle
                    running.append((label, seed, run_dir, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                                           env=env)))
                if echo:
                    print(f"[{name}] start {label} seed {seed}", flush=True)
            time.sleep(0.5)
            for item in [r for r in running if r[3].poll() is not None]:
                running.remove(item)
                _report(name, *item, failures, stopped, echo, phase_b, t0)
    if failures:
        logs = ", ".join(str(d / "train.log") for _, _, d in failures)
        raise RunFailedError(f"{len(failures)} run(s) stopped without a result: "
                             f"{', '.join(f'{a} seed {b}' for a, b, _ in failures)}: see {logs}")
    df = aggregate(name, configs, seeds, out)
    message = stop_message(name, terminated, len(stopped), unstarted)
    if message:
        raise StoppedError(message)
    return df


def stop_message(name: str, terminated: bool, stopped: int, unstarted: int) -> str | None:
    """The grid's one line after a SIGTERM, or None when there is nothing to resume: a signal that
    arrives while the last runs finish leaves a complete grid."""
    if not terminated or stopped + unstarted == 0:
        return None
    return (f"{name} stopped by SIGTERM: {stopped} run(s) kept their checkpoints and {unstarted} did not "
            f"start; the same command resumes them")


def _report(name, label, seed, run_dir, proc, failures, stopped, echo, phase_b, t0) -> None:
    """One line on a run that ended: a divergence or a SIGTERM stop is an outcome (its summary says
    which), any other non-zero exit a failure, with the tail of its log."""
    status = rundir.status(run_dir) if proc.returncode != 0 else None
    if status == "stopped":
        at = json.loads((run_dir / "summary.json").read_text()).get("ended_at_step")
        stopped.append((label, seed))
        print(f"[{name}] stopped {label} seed {seed} at step {at}: its checkpoint is kept", flush=True)
    elif status == "diverged":  # a result, aggregated without bpc
        ended = json.loads((run_dir / "summary.json").read_text())
        print(f"[{name}] diverged {label} seed {seed} at step {ended.get('ended_at_step')}: kept as a result "
              f"({ended.get('message', 'non-finite loss')})", flush=True)
    elif proc.returncode == -signal.SIGTERM:  # killed before its trainer took the signal over
        stopped.append((label, seed))
        print(f"[{name}] stopped {label} seed {seed} before its first logged step", flush=True)
    elif proc.returncode != 0:
        failures.append((label, seed, run_dir))
        tail = (run_dir / "train.log").read_text()[-2000:]
        print(f"[{name}] FAILED {label} seed {seed} (exit {proc.returncode})\n{tail}", flush=True)
    elif echo and phase_b is not None:
        print(f"[{name}] done {label} seed {seed} ({time.time() - t0:.0f} s)", flush=True)
    elif echo:
        s = json.loads((run_dir / "summary.json").read_text())
        print(f"[{name}] done {label} seed {seed}: valid {_bpc(s['valid_bpc'])} test {_bpc(s['test_bpc'])} "
              f"bpc, {s['chars_per_s'] / 1e6:.2f} M chars/s ({time.time() - t0:.0f} s)", flush=True)


def _bpc(value: float | None) -> str:
    """A summary's bpc for the progress line (a non-finite one is NaN in memory, null on disk)."""
    return "non-finite" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _resume_flag(run_dir: Path, phase_b: PhaseB | None = None) -> str:
    """--resume where a checkpoint is left to continue from (a probe: phase A's), else --overwrite
    (nothing to keep)."""
    where = run_dir if phase_b is None else run_dir / "phase_a"
    return "--resume" if (where / CHECKPOINT_NAME).is_file() else "--overwrite"


def collect(out: Path, labels: list[str] | None = None) -> pd.DataFrame:
    """Tidy rows (config, seed, metric, value) from every run summary under out/runs."""
    rows = []
    for summ in sorted((out / "runs").glob("*/seed*/summary.json")):
        label, seed = summ.parent.parent.name, int(summ.parent.name[4:])
        if labels is not None and label not in labels:
            continue
        s = json.loads(summ.read_text())
        if s.get("status", "finished") != "finished":  # a diverged or stopped run has no held-out numbers
            continue
        points = {f"{c}_valid_bpc_step{p['step_b']}": p[f"{c}_valid_bpc"] for p in s.get("points", []) for c in "ab"}
        for m, v in ({m: s.get(m) for m in (*METRICS, *PROBE_METRICS)} | points).items():
            if v is not None:
                rows.append({"config": label, "seed": seed, "metric": m, "value": float(v)})
    return pd.DataFrame(rows, columns=["config", "seed", "metric", "value"])


def aggregate(name: str, configs: list[GridConfig], seeds: list[int], out: Path) -> pd.DataFrame:
    from nlcore import repro
    from nlcore.results import write_experiment

    df = collect(out, [gc.label for gc in configs])
    run_metas = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/seed*/meta.json"))
                 if p.parent.parent.name in {gc.label for gc in configs}]
    revisions = sorted({json.dumps(m.get("git"), sort_keys=True) for m in run_metas})
    meta = {
        "experiment": name, "command": " ".join(shlex.quote(a) for a in sys.argv), "seeds": list(seeds),
        "configs": {gc.label: {"preset": gc.preset, "overrides": list(gc.overrides)} for gc in configs},
        "git": repro.git_info(),  # where the aggregation ran; the runs' own revisions below
        "run_revisions": [json.loads(r) for r in revisions],
        "run_environment": run_metas[0].get("environment") if run_metas else None,
        "environment": repro.capture_environment(),
    }
    write_experiment(out, df, meta=meta)
    return df
