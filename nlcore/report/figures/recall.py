"""Associative recall of the write rules (notebook 04): recall error against load."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nlcore.report.figures.common import GREY, mean_ci
from nlcore.report.plotting import PALETTE

RECALL_STYLE = {  # method -> (colour, line style, label)
    "hebbian": (PALETTE["bluish_green"], "-", "Hebbian  W + η v kᵀ"),
    "gd": (PALETTE["vermillion"], "-", "GD / LMS  W − η (Wk − v) kᵀ"),
    "delta_exact": (PALETTE["blue"], "-", "delta, exact proximal"),
    "delta_normalized": (PALETTE["sky_blue"], "--", "delta, normalised (k̂)"),
    "lstsq": (PALETTE["black"], ":", "least squares (offline optimum)"),
}
_FACET_NAMES = {"d": "d", "key_norm_spread": "key-norm spread", "eta": "η"}


def _facet_title(keys: Sequence[str], values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    parts = []
    for k, v in zip(keys, values):
        if k == "key_norm_spread" and float(v) == 0.0:
            parts.append("unit-norm keys")
        else:
            parts.append(f"{_FACET_NAMES.get(k, k)} = {float(v):g}")
    return ", ".join(parts)


def recall_curves(runs: pd.DataFrame, cols: Sequence[str] = (), rows: Sequence[str] = (),
                  ylim: tuple[float, float] = (1e-3, 30.0)) -> Figure:
    """Recall error ‖Wk − v‖²/‖v‖² against load n/d, one line per write rule: mean across seeds
    with a 95 % t band, one panel per value of `rows` × `cols` (e.g. d; key-norm
    spread, η). Log y between `ylim`: a mean outside it (or a diverged, non-finite seed) is
    drawn as a hollow marker at the edge, so an exact least-squares fit (≈ 1e-12) sits on the
    floor and a diverged rule on the ceiling. `runs`: tidy (method or config, load, seed, value,
    and the facet columns), as `nlcore.experiments.recall.run_recall_benchmark` or `nlcore recall` write it."""
    df = runs.rename(columns={"config": "method"}) if "method" not in runs.columns else runs
    rows, cols = list(rows), list(cols)
    rkeys = sorted(df.groupby(rows).groups) if rows else [None]
    ckeys = sorted(df.groupby(cols).groups) if cols else [None]
    fig = Figure(figsize=(3.3 * len(ckeys) + 1.0, 3.0 * len(rkeys) + 1.1), layout="constrained")
    axes = fig.subplots(len(rkeys), len(ckeys), squeeze=False, sharex=True, sharey=True)
    lo_y, hi_y = ylim
    handles: dict[str, object] = {}
    for i, rk in enumerate(rkeys):
        for j, ck in enumerate(ckeys):
            ax = axes[i, j]
            sel = df
            for keys, val in ((rows, rk), (cols, ck)):
                if keys:
                    vals = val if isinstance(val, tuple) else (val,)
                    for k, v in zip(keys, vals):
                        sel = sel[sel[k] == v]
            for method in [m for m in RECALL_STYLE if m in set(sel["method"])]:
                color, ls, label = RECALL_STYLE[method]
                g = sel[sel["method"] == method].pivot_table(index="load", columns="seed", values="value",
                                                             aggfunc="first", dropna=False)
                table = g.to_numpy(dtype=np.float64)  # (loads, seeds)
                stats = np.array([mean_ci(r) if np.isfinite(r).all() else (np.inf, np.nan, np.nan) for r in table])
                x, mean = g.index.to_numpy(dtype=float), stats[:, 0]
                inside = (mean >= lo_y) & (mean <= hi_y)
                (line,) = ax.plot(x, np.clip(mean, lo_y, hi_y), color=color, linestyle=ls, marker="o", ms=3)
                ax.fill_between(x, np.clip(stats[:, 1], lo_y, hi_y), np.clip(stats[:, 2], lo_y, hi_y),
                                color=color, alpha=0.18, linewidth=0)
                ax.plot(x[~inside], np.clip(mean[~inside], lo_y, hi_y), "o", ms=7, mfc="white", mec=color)
                handles.setdefault(f"{label} (n={g.shape[1]})", line)
            ax.set_yscale("log")
            ax.set_ylim(lo_y * 0.7, hi_y * 1.4)
            title = "; ".join(t for t in (_facet_title(rows, rk) if rows else "", _facet_title(cols, ck) if cols else "") if t)
            ax.set_title(title, fontsize=10)
            if i == len(rkeys) - 1:
                ax.set_xlabel("load n/d (stored keys per dimension)")
            if j == 0:
                ax.set_ylabel("recall error ‖Wk − v‖² / ‖v‖²")
    handles["hollow marker: off scale (drawn at the edge; top: diverged)"] = axes[0, 0].plot(
        [], [], "o", mfc="white", mec=GREY)[0]
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=3, fontsize=9)
    fig.suptitle("Associative recall of the latest value per key (correlated keys, with overwrites): "
                 "mean and 95 % t band over seeds", fontsize=11)
    return fig


def recall_explorer(d: int = 32, eta: float = 1.0, load: float = 1.0, key_norm_spread: float = 0.0,
                    seeds: Sequence[int] = (0, 1, 2), ylim: tuple[float, float] = (1e-3, 30.0)) -> Figure:
    """The recall benchmark run live at dimension `d`, step `eta` and key-norm spread, for the
    standard loads and `load`: left, recall error against load (mean over seeds, the chosen load
    marked); right, each rule's error at `load`, one bar per rule. Loads above 1 store more keys
    than the memory has dimensions, so even least squares must interfere there. Off-scale means
    (a diverged GD) sit on the ceiling, as in `recall_curves`. Cheap on a CPU (d ≤ 128: under a
    second), so a widget can redraw it as its sliders move."""
    from nlcore.experiments.recall import DEFAULT_LOADS, run_recall_benchmark

    loads = sorted(set(DEFAULT_LOADS) | {round(float(load), 4)})
    runs = run_recall_benchmark(d=int(d), loads=loads, seeds=tuple(seeds), eta=float(eta),
                                key_norm_spread=float(key_norm_spread))
    mean = runs.groupby(["method", "load"])["value"].mean().unstack("method")  # (loads, methods)
    lo_y, hi_y = ylim
    fig = Figure(figsize=(10.0, 3.9), layout="constrained")
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    methods = [m for m in RECALL_STYLE if m in mean.columns]
    for m in methods:
        color, ls, label = RECALL_STYLE[m]
        y = mean[m].to_numpy(dtype=float)
        ax.plot(mean.index, np.clip(np.nan_to_num(y, nan=np.inf), lo_y, hi_y), color=color, linestyle=ls,
                marker="o", ms=3, label=label)
    ax.axvline(load, color=GREY, linewidth=1.0)
    ax.axvline(1.0, color=GREY, linewidth=0.8, linestyle=":")
    ax.text(1.0, hi_y, " n = d", fontsize=8, color=GREY, va="top")
    ax.set(xscale="linear", yscale="log", ylim=(lo_y * 0.7, hi_y * 1.4),
           xlabel="load n/d (stored keys per dimension)", ylabel="recall error ‖Wk − v‖² / ‖v‖²")
    ax.legend(fontsize=8, loc="lower right")
    at = mean.loc[round(float(load), 4), methods].to_numpy(dtype=float)  # (methods,)
    shown = np.clip(np.nan_to_num(at, nan=np.inf), lo_y, hi_y)
    bx.bar(range(len(methods)), shown, color=[RECALL_STYLE[m][0] for m in methods])
    for i, v in enumerate(at):
        bx.text(i, shown[i] * 1.15, f"{v:.2g}" if np.isfinite(v) else "diverged", ha="center", fontsize=8)
    bx.set_xticks(range(len(methods)), [m.replace("delta_", "delta\n") for m in methods], fontsize=8)
    bx.set(yscale="log", ylim=(lo_y * 0.7, hi_y * 4), ylabel="recall error at the chosen load")
    bx.grid(axis="x", visible=False)
    online = {m: v for m, v in zip(methods, at) if m != "lstsq"}
    best = min(online, key=lambda m: online[m] if np.isfinite(online[m]) else np.inf)
    n = max(1, round(load * d))
    fig.suptitle(f"d = {int(d)}, η = {eta:.3g}, {n} keys (load {load:g}, "
                 f"{'unit-norm keys' if key_norm_spread == 0 else f'key-norm spread {key_norm_spread:g}'}): "
                 f"the best online write is {best} ({online[best]:.2g}; least squares {mean.loc[round(float(load), 4), 'lstsq']:.2g})"
                 f"\nmean over {len(seeds)} seeds; correlated keys with 20 % overwrites", fontsize=10)
    return fig
