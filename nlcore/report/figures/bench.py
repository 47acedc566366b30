"""Step-time reports of `nlcore.bench.step`: a table and a figure of step time and overhead."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nlcore.bench.step import SCALING
from nlcore.paths import REPO_ROOT
from nlcore.report.figures.common import GREY, new_figure, read_json
from nlcore.report.plotting import CYCLE


def bench_overheads(report: Mapping | str | Path, configs: Sequence[str] | None = None) -> pd.DataFrame:
    """A step-time report of `nlcore.bench.step` (the dict `nlcore.bench.step.load_report` returns, or the
    path of its JSON) as a table, one row per configuration: step time over the timed windows
    (median, min, max, IQR; ms) and the paired overhead against `seed_persistent` (median and
    min/q25/q75/max over the repeats), plus the device it ran on. `configs` selects and orders rows."""
    path = "the report"
    if not isinstance(report, Mapping):
        path, report = report, read_json(Path(report))
    cs = report["configs"]
    names = list(configs) if configs is not None else list(cs)
    missing = [c for c in names if c not in cs]
    if missing:
        raise KeyError(f"{path}: no configuration(s) {missing}; it has {sorted(cs)}")
    rows = []
    for name in names:
        c = cs[name]
        sp = c.get("overhead_vs_persistent_spread") or {}
        rows.append({"config": name, "overrides": " ".join(c.get("overrides") or []) or "(none)",
                     "step_ms_median": c["step_ms_median"], "step_ms_min": c["step_ms_min"],
                     "step_ms_max": c["step_ms_max"], "step_ms_iqr": c["step_ms_iqr"],
                     "overhead": c.get("overhead_vs_persistent"), "overhead_min": sp.get("min"),
                     "overhead_q25": sp.get("q25"), "overhead_q75": sp.get("q75"), "overhead_max": sp.get("max"),
                     "windows": len(c.get("step_ms_windows") or []),
                     "device": report.get("device_name") or report.get("device")})
    return pd.DataFrame(rows).set_index("config")


def bench_figure(table: pd.DataFrame) -> Figure:
    """Left: median step time per configuration, whiskers min–max over the timed windows.
    Right: overhead against seed_persistent (paired per repeat): median, IQR (thick), min–max."""
    fig, (ax, bx) = new_figure(11.0, 1.4 + 0.5 * len(table), ncols=2, sharey=True)
    ys = np.arange(len(table))
    for y, (_name, r) in zip(ys, table.iterrows()):
        color = CYCLE[y % len(CYCLE)]
        ax.errorbar(r["step_ms_median"], y, xerr=[[r["step_ms_median"] - r["step_ms_min"]],
                                                  [r["step_ms_max"] - r["step_ms_median"]]],
                    fmt="o", color=color, capsize=3)
        ax.text(r["step_ms_median"], y - 0.18, f"{r['step_ms_median']:.2f} ms", ha="center", fontsize=9)
        if r["overhead"] is None or not math.isfinite(r["overhead"]):
            continue
        bx.plot([100 * r["overhead_min"], 100 * r["overhead_max"]], [y, y], color=color, linewidth=1.2)
        bx.plot([100 * r["overhead_q25"], 100 * r["overhead_q75"]], [y, y], color=color, linewidth=6,
                solid_capstyle="butt", alpha=0.6)
        bx.plot(100 * r["overhead"], y, "o", color=color)
        bx.text(100 * r["overhead"], y - 0.2, f"{100 * r['overhead']:+.1f} %", ha="center", fontsize=9)
    ax.set_yticks(ys, list(table.index))
    ax.set_ylim(len(table) - 0.5, -0.6)
    ax.set_xlabel("step time (ms; median, whiskers min–max over windows)")
    bx.axvline(0, color=GREY, linewidth=1.0)
    bx.set_xlabel("overhead vs seed_persistent (%; median, IQR, min–max)")
    for axis in (ax, bx):
        axis.grid(axis="y", visible=False)
    fig.suptitle(f"Training step time, measured on {table['device'].iloc[0]} "
                 f"({int(table['windows'].iloc[0])} interleaved windows)", fontsize=12)
    return fig


# Committed reports measured before the surprise implementation was named "hooks" label it "fast".
REPORT_LABELS = {"seed_surprise_fast": "seed_surprise_hooks", "seed_surprise_fast_eager": "seed_surprise_hooks_eager"}


def bench_report(name: str) -> dict:
    """A committed benchmark report, `results/bench/<name>.json` (e.g. "seed", "scaling"), with its
    configurations under today's labels."""
    path = REPO_ROOT / "results" / "bench" / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no benchmark report {path}: run `python -m nlcore bench` on a GPU "
                                f"(docs/reproduce.md lists the command behind each report)")
    report = json.loads(path.read_text())
    if "configs" in report:
        report["configs"] = {REPORT_LABELS.get(k, k): v for k, v in report["configs"].items()}
    return report


def plot_scaling(report: dict, ax_row=None):
    """Characters/s against batch, width and window from a `--scaling` report (one panel each),
    with the throughput the LSTM alone would allow (its floor, `nlcore.bench.floor`) where measured."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4)) if ax_row is None else (None, ax_row)
    labels = {"batch": "batch size B (rows)", "width": "d_model (d_ff = 2 d_model)",
              "window": "window T (characters)"}
    for ax, (knob, pairs) in zip(axes, SCALING.items()):
        xs, ys, fs = [], [], []
        for _, v in pairs:
            c = report["configs"].get(f"{knob}_{v}")
            if c is not None:
                xs.append(v)
                ys.append(c["chars_per_s"] / 1e6)
                fs.append(c["batch_size"] * c["seq_len"] / c["floor_ms"] / 1e3 if c.get("floor_ms") else None)
        ax.plot(xs, ys, marker="o", label="training step")
        if all(f is not None for f in fs):
            ax.plot(xs, fs, ls="--", color="grey", label="LSTM alone (floor)")
            ax.legend(fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(labels[knob])
        ax.set_ylabel("training throughput (M characters / s)")
        ax.set_xticks(xs, [str(x) for x in xs])
    if fig is not None:
        fig.suptitle(f"{report['device_name']}: seed model, CMS 1/16/256, bf16, cuda_graph=auto "
                     f"(median of {report['settings']['windows']} windows)", fontsize=9)
        fig.tight_layout()
    return fig
