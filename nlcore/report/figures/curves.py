"""Curves across seeds from the per-run files: training curves, bits per character by position and
its paired difference between two configurations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nlcore.report.figures.common import mean_ci, metric_label, new_figure, read_json, read_metrics
from nlcore.report.plotting import CYCLE, band


def seed_dirs(exp_dir: str | Path, config: str) -> list[Path]:
    """`<exp_dir>/runs/<config>/seed<k>/` folders that hold a finished run (summary.json)."""
    found = sorted((Path(exp_dir) / "runs" / config).glob("seed*/summary.json"),
                   key=lambda p: int(p.parent.name[4:]))
    return [p.parent for p in found]


def _need_runs(exp_dir: str | Path, config: str) -> list[Path]:
    dirs = seed_dirs(exp_dir, config)
    if not dirs:
        raise FileNotFoundError(
            f"no per-run files for {config!r} under {Path(exp_dir) / 'runs' / config}: the figures need "
            f"runs/<config>/seed<k>/{{summary.json,metrics.jsonl,meta.json}} beside summary.json")
    return dirs


def _seed_curves(curves: list[pd.Series]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Align per-seed curves on their index; return x, mean, lo, hi (per x) and n seeds."""
    table = pd.concat(curves, axis=1).sort_index()  # (x, seeds)
    stats = np.array([mean_ci(row) for row in table.to_numpy(dtype=np.float64)])  # (x, 3)
    return table.index.to_numpy(), stats[:, 0], stats[:, 1], stats[:, 2], len(curves)


def training_curves(exp_dir: str | Path, configs: Sequence[str], metric: str = "train_bpc") -> Figure:
    """`metric` from each run's metrics.jsonl against training step: mean across seeds with a
    95 % t band; the right panel zooms on the second half of training, where the
    configurations separate. For valid_bpc the final whole-split value (summary.json) is the
    last point; earlier points are intermediate evaluations on the first windows of the split."""
    fig, (ax, zx) = new_figure(10.0, 4.2, ncols=2)
    last_step = 0
    for i, config in enumerate(configs):
        curves = []
        for run in _need_runs(exp_dir, config):
            pts = {r["step"]: r[metric] for r in read_metrics(run) if r.get(metric) is not None}
            if metric == "valid_bpc":
                s = read_json(run / "summary.json")
                pts[int(s["steps"])] = s["valid_bpc"]
            curves.append(pd.Series(pts, name=run.name, dtype=float))
        x, mean, lo, hi, n = _seed_curves(curves)
        last_step = max(last_step, int(x.max()))
        kw = {"marker": "o", "ms": 3} if len(x) < 12 else {}
        for axis in (ax, zx):
            band(axis, x, mean, lo, hi, label=config, n=n, color=CYCLE[i % len(CYCLE)], **kw)
    half = last_step / 2
    zx.set_xlim(half, last_step * 1.01)
    ys = [y for line in zx.get_lines() for xv, y in zip(line.get_xdata(), line.get_ydata())
          if xv >= half and np.isfinite(y)]
    if ys:
        pad = 0.05 * max(max(ys) - min(ys), 1e-6)
        zx.set_ylim(min(ys) - pad, max(ys) + pad)
    for axis in (ax, zx):
        axis.set_xlabel("training step")
    ax.set_ylabel(metric_label(metric))
    ax.set_title("all steps", fontsize=11)
    zx.set_title("second half (zoomed)", fontsize=11)
    zx.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{metric_label(metric).capitalize()} during training (mean across seeds, 95 % CI band)", fontsize=12)
    return fig


def _positions(exp_dir: str | Path, config: str) -> dict[str, pd.Series]:
    """Seed folder name -> valid bpc at each position 1..T of the window (summary.json)."""
    out = {}
    for run in _need_runs(exp_dir, config):
        by_pos = read_json(run / "summary.json").get("valid_bpc_by_position")
        if not by_pos:
            raise ValueError(f"{run}/summary.json has no valid_bpc_by_position")
        out[run.name] = pd.Series(by_pos, index=np.arange(1, len(by_pos) + 1), name=run.name, dtype=float)
    return out


def bpc_by_position(exp_dir: str | Path, configs: Sequence[str], log_x: bool = True,
                    title: str | None = None) -> Figure:
    """Validation bits per character against the position inside the window (from each run's
    summary `valid_bpc_by_position`), mean across seeds with a 95 % band. Carried state should
    help most at the first positions, where a reset model has no context at all. `title`
    states the finding."""
    fig, (ax,) = new_figure(6.8, 4.2)
    for i, config in enumerate(configs):
        x, mean, lo, hi, n = _seed_curves(list(_positions(exp_dir, config).values()))
        band(ax, x, mean, lo, hi, label=config, n=n, color=CYCLE[i % len(CYCLE)])
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("position inside the window (characters since the window start)")
    ax.set_ylabel(metric_label("valid_bpc"))
    ax.set_title(title or "Where in the window carried state helps (mean, 95 % CI band)", fontsize=11, loc="left")
    ax.legend(fontsize=9)
    return fig


def position_differences(exp_dir: str | Path, config: str, baseline: str, log_x: bool = True,
                         title: str | None = None) -> Figure:
    """Valid bpc of `config` minus `baseline` at each position inside the window, seed by seed
    (same seed, same data order; windows of equal length), mean and 95 % t band over the paired
    seeds: where in the window the two differ, with the noise the runs share cancelled."""
    a, b = _positions(exp_dir, config), _positions(exp_dir, baseline)
    seeds = sorted(set(a) & set(b))
    if not seeds or any(len(a[s]) != len(b[s]) for s in seeds):
        raise ValueError(f"position_differences: {config!r} and {baseline!r} share no seed with windows of one length")
    x, mean, lo, hi, n = _seed_curves([(a[s] - b[s]).rename(s) for s in seeds])
    fig, (ax,) = new_figure(6.8, 4.0)
    band(ax, x, mean, lo, hi, label=f"{config} − {baseline}", n=n, color=CYCLE[1])
    ax.axhline(0.0, color="grey", lw=1, ls="--")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("position inside the window (characters since the window start)")
    ax.set_ylabel(f"Δ {metric_label('valid_bpc')}")
    ax.set_title(title or f"{config} − {baseline} by position, paired by seed (mean, 95 % t band)",
                 fontsize=11, loc="left")
    ax.legend(fontsize=9)
    return fig


def paired_curves(exp_dir: str | Path, configs: Sequence[str], baseline: str, metric: str = "train_bpc",
                  smooth: int = 1) -> Figure:
    """`metric` of each configuration minus the baseline's, seed by seed (same seed, same data
    order), against training step: mean and 95 % t band over the paired seeds. The noise the runs
    share (which windows are hard) cancels, so the gap a configuration opens or closes shows.
    `smooth`: average over that many consecutive logged points first."""
    base = {run.name: run for run in _need_runs(exp_dir, baseline)}
    fig, (ax,) = new_figure(7.5, 4.2)
    for i, config in enumerate(c for c in configs if c != baseline):
        curves = []
        for run in _need_runs(exp_dir, config):
            if run.name not in base:
                continue
            a = pd.Series({r["step"]: r[metric] for r in read_metrics(run) if r.get(metric) is not None}, dtype=float)
            b = pd.Series({r["step"]: r[metric] for r in read_metrics(base[run.name]) if r.get(metric) is not None},
                          dtype=float)
            d = (a - b).dropna().rolling(smooth, min_periods=1).mean()
            curves.append(d.rename(run.name))
        if curves:
            x, mean, lo, hi, n = _seed_curves(curves)
            band(ax, x, mean, lo, hi, label=config, n=n, color=CYCLE[(i + 1) % len(CYCLE)])
    ax.axhline(0.0, color="grey", lw=1, ls="--", label=baseline)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{metric_label(metric)} minus {baseline}")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{metric_label(metric).capitalize()} against {baseline}, paired by seed "
                 f"(mean and 95 % t band; below zero is better)", fontsize=11)
    return fig
