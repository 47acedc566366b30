"""The scaling study's steps between runs: choose each model's learning rate from the sweep, and
measure held-out bpc against context on trained runs.

    best_lrs("results/07_lr_sweep")           # {model: lr} with the lowest valid bpc, for LR_07
    context_of_run(run_dir, split="test")     # bpc per log-spaced bin of characters read since the
                                              # document start, written beside the run
    context_table("results/07_scaling")       # every run's bins as tidy rows (context.csv)
    ranking_table("results/07_scaling", "33M")  # Markdown: per-seed bpc, t intervals, paired gaps
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from nlcore.errors import CheckpointError, RunDirError
from nlcore.training import rundir
from nlcore.training.checkpoint import CHECKPOINT_NAME

CONTEXT_FILE = "bpc_by_context_{split}.json"  # written into the run directory


def best_lrs(sweep: str | Path, metric: str = "valid_bpc") -> dict[str, float]:
    """{model: lr} with the lowest mean `metric` over seeds among the sweep's finished runs; labels
    are `<model>_lr<lr>` (07_lr_sweep). A model whose best rate is the lowest or highest tried is
    reported on stderr: its optimum may lie outside the sweep."""
    import sys

    path = Path(sweep) / "runs.csv"
    if not path.is_file():
        raise RunDirError(f"no runs.csv in {sweep}: run the sweep first (python -m nlcore experiment 07_lr_sweep)")
    df = pd.read_csv(path)
    df = df[(df.metric == metric) & df.config.str.contains("_lr")]
    if df.empty:
        raise RunDirError(f"{path} holds no {metric} of a configuration named <model>_lr<lr>")
    parts = df.config.str.rsplit("_lr", n=1, expand=True)
    df = df.assign(model=parts[0], lr=parts[1].astype(float))
    means = df.groupby(["model", "lr"]).value.mean().reset_index()
    out = {}
    for model, g in means.groupby("model", sort=False):
        best = g.loc[g.value.idxmin()]
        out[str(model)] = float(best.lr)
        tried = sorted(df[df.model == model].lr.unique())
        if best.lr in (tried[0], tried[-1]):
            print(f"{model}: the best rate {best.lr:g} is at the edge of the sweep {tried}", file=sys.stderr)
    return out


def context_of_run(run: str | Path, split: str = "test", *, device="cpu", rows: int = 64,
                   overwrite: bool = False) -> dict:
    """`bpc_by_context` of a finished run's model on `split` of its corpus, read with the run's window
    and precision, written to ``<run>/bpc_by_context_<split>.json`` (never silently replaced). A run
    that diverged or stopped is refused: its checkpoint holds the model of a step before its end."""
    import torch

    from nlcore import repro
    from nlcore.training.evaluate import bpc_by_context
    from nlcore.training.sampling import load
    from nlcore.training.trainer import load_data

    run = Path(run)
    if not (run / CHECKPOINT_NAME).is_file():
        raise CheckpointError(f"no {CHECKPOINT_NAME} in {run}: evaluate a run directory that finished training")
    if (st := rundir.status(run)) != "finished":
        raise RunDirError(f"{run} has not finished training (status {st}): its checkpoint is not the trained "
                          f"model; finish it with --resume or leave it out")
    dest = run / CONTEXT_FILE.format(split=split)
    if dest.exists() and not overwrite:
        raise RunDirError(f"{dest} exists: pass --overwrite to measure again")
    device = repro.pick_device(device) if isinstance(device, str) else device
    loaded = load(run, device)
    cfg = loaded.config
    corpus = load_data(cfg, loaded.tokenizer)
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and torch.device(device).type == "cuda")
    out = bpc_by_context(loaded.model, corpus, split, device=device, seq_len=loaded.seq_len, rows=rows, amp=amp)
    out |= {"run": str(run), "split": split, "corpus": cfg.data.corpus, "amp": amp}
    dest.write_text(json.dumps(out, indent=1) + "\n")
    return out


def context_table(out: str | Path, split: str = "test") -> pd.DataFrame:
    """Tidy rows (config, seed, bin_lo, bin_hi, count, bpc) from every run's context file under
    `out`/runs, written to `out`/context_<split>.csv (bin_hi is empty for the open last bin)."""
    rows = []
    for f in sorted(Path(out).glob(f"runs/*/seed*/{CONTEXT_FILE.format(split=split)}")):
        r = json.loads(f.read_text())
        edges = r["edges"]
        for k, (n, b) in enumerate(zip(r["count"], r["bpc"])):
            rows.append({"config": f.parent.parent.name, "seed": int(f.parent.name[4:]), "bin_lo": edges[k],
                         "bin_hi": edges[k + 1] if k + 1 < len(edges) else math.nan, "count": n, "bpc": b})
    df = pd.DataFrame(rows, columns=["config", "seed", "bin_lo", "bin_hi", "count", "bpc"])
    if df.empty:
        raise RunDirError(f"no {CONTEXT_FILE.format(split=split)} under {out}/runs: run "
                          f"python -m nlcore evaluate-context --run <run> ... first")
    df.to_csv(Path(out) / f"context_{split}.csv", index=False)
    return df


def ranking_table(exp: str | Path, suffix: str = "", metric: str = "test_bpc") -> str:
    """A Markdown table of the configurations of `exp` whose names end in `suffix`, best mean
    `metric` first: valid and test bpc seed by seed (a run without numbers reads how it ended), the
    test mean with its Student-t 95 % interval, and each row minus the leader, paired over the seeds
    both finished. A single finished seed has no interval and says n=1."""
    from nlcore.stats import paired_diff_ci, t_ci

    exp = Path(exp)
    runs = pd.read_csv(exp / "runs.csv")
    runs = runs[runs.config.str.endswith(suffix)]
    if runs.empty:
        raise RunDirError(f"{exp}/runs.csv holds no configuration ending in {suffix!r}")
    seeds = sorted({int(p.name[4:]) for p in exp.glob("runs/*/seed*") if p.name[4:].isdigit()})
    table = {c: g.pivot(index="seed", columns="metric", values="value") for c, g in runs.groupby("config")}
    order = sorted(table, key=lambda c: table[c][metric].mean())
    lead = table[order[0]][metric]

    def fmt(m, lo, hi, n, sign=""):
        return f"{m:{sign}.3f} (n=1)" if n == 1 else f"{m:{sign}.3f} [{lo:{sign}.3f}, {hi:{sign}.3f}] (n={n})"

    def per_seed(c, col):
        t = table[c]
        def missing(s):  # a run without numbers: how it ended (diverged, stopped), or never started
            run = exp / "runs" / c / f"seed{s}"
            return (rundir.status(run) or "unfinished") if run.is_dir() else "not run"

        return ", ".join(f"{t.at[s, col]:.4f}" if s in t.index else missing(s) for s in seeds)

    lines = [f"| config | valid bpc, seeds {', '.join(map(str, seeds))} | {metric.replace('_', ' ')}, same seeds "
             f"| {metric.replace('_', ' ')}, mean [95 % t] | minus `{order[0]}`, paired [95 % t] |",
             "|---|---|---|---|---|"]
    for c in order:
        x = table[c][metric]
        gap = ""
        if c != order[0]:
            both = x.index.intersection(lead.index)
            gap = fmt(*paired_diff_ci(x.loc[both], lead.loc[both]), len(both), sign="+")
        lines.append(f"| `{c}` | {per_seed(c, 'valid_bpc')} | {per_seed(c, metric)} | {fmt(*t_ci(x), len(x))} | {gap} |")
    return "\n".join(lines)
