"""Every configuration of notebooks 01–04 on one axis, grouped by the lever it moves (notebook 05)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nlcore.report.figures.common import GREY, metric_label
from nlcore.report.plotting import PALETTE

LEVER_COLORS = {
    "baseline": PALETTE["black"],
    "CMS: chunks, lr policy, optimizer": PALETTE["blue"],
    "FFN output init": PALETTE["reddish_purple"],
    "surprise objective": PALETTE["orange"],
    "state policy": PALETTE["bluish_green"],
    "delta rule": PALETTE["vermillion"],
    "LayerNorm + residual": PALETTE["sky_blue"],
    "the prototype's settings": GREY,
}


def _ablation_labels(t: pd.DataFrame) -> list[str]:
    out = []
    for r in t.itertuples():
        label = f"{r.experiment[:2]} {r.config}"
        if r.same_as:
            label += " = " + " = ".join(r.same_as.split(", "))
        if math.isfinite(r.chars_ratio) and abs(r.chars_ratio - 1.0) > 1e-9:
            label += f"  [{r.chars_ratio:g}× characters]"
        out.append(f"{label} (n={r.n})")
    return out


def _ablation_panel(ax, t: pd.DataFrame, base: pd.Series | None, xmax: float | None) -> None:
    if base is not None and math.isfinite(base["ci_low"]):
        ax.axvspan(base["ci_low"], base["ci_high"], color=GREY, alpha=0.15, linewidth=0)
    if base is not None:
        ax.axvline(base["mean"], color=GREY, linestyle="--", linewidth=1.0)
    for y, r in enumerate(t.itertuples()):
        color = LEVER_COLORS.get(r.lever, GREY)
        if y > 0 and r.lever != t["lever"].iloc[y - 1]:  # a thin rule between lever groups
            ax.axhline(y - 0.5, color=GREY, linewidth=0.5, alpha=0.6)
        if xmax is not None and r.mean > xmax:  # off the axis: an arrow at the edge with the numbers
            ci = f" [{r.ci_low:.3f}, {r.ci_high:.3f}]" if math.isfinite(r.ci_low) and math.isfinite(r.ci_high) else ""
            ax.plot(xmax, y, ">", color=color, ms=7)
            ax.text(xmax, y - 0.3, f"off the axis: {r.mean:.3f}{ci}", ha="right", fontsize=8, color=color)
            continue
        if math.isfinite(r.ci_low) and math.isfinite(r.ci_high):
            ax.errorbar(r.mean, y, xerr=[[r.mean - r.ci_low], [r.ci_high - r.mean]], fmt="o", color=color,
                        capsize=3, ms=5)
        else:
            ax.plot(r.mean, y, "o", color=color, ms=5)
    ax.set_yticks(range(len(t)), _ablation_labels(t), fontsize=9)
    for tick, lever in zip(ax.get_yticklabels(), t["lever"]):
        tick.set_color(LEVER_COLORS.get(lever, GREY))
    ax.set_ylim(len(t) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)


def ablation_ranking(table: pd.DataFrame, metric: str = "valid_bpc") -> Figure:
    """Every distinct configuration of several experiments, grouped by the lever it moves
    (the baseline first), ranked inside each group; mean and 95 % t interval, n per row,
    the baseline's mean (dashed) and CI (grey band) across the whole panel. Rows far worse than
    the rest are drawn as an arrow at the right edge with their numbers. Rows run with the
    prototype's settings get their own panel and axis. `table` as
    `nlcore.report.notebook.ablation_table` returns it."""
    proto = table[table["prototype"]].sort_values("mean")
    ours = table[~table["prototype"]].copy()
    order = {lv: i for i, lv in enumerate(LEVER_COLORS)}
    ours["_g"] = ours["lever"].map(lambda lv: order.get(lv, len(order)))
    ours = ours.sort_values(["_g", "mean"], kind="mergesort").drop(columns="_g")
    base = ours[ours["lever"] == "baseline"].iloc[0] if (ours["lever"] == "baseline").any() else None
    means = ours["mean"].to_numpy(dtype=float)
    q1, q3 = np.nanpercentile(means, [25, 75]) if len(means) else (np.nan, np.nan)
    far = q3 + 3 * max(q3 - q1, 1e-3)  # Tukey's far-out fence: keep the close differences readable
    xmax = None
    if np.nanmax(means) > far:
        near = ours[ours["mean"] <= far]
        hi = float(np.nanmax(near[["mean", "ci_high"]].to_numpy(dtype=float)))
        lo = float(np.nanmin(near[["mean", "ci_low"]].to_numpy(dtype=float)))
        xmax = hi + 0.25 * (hi - lo)
    panels = [(ours, "this repository's settings", base, xmax)] + \
             ([(proto, "the prototype's settings (own axis)", None, None)] if len(proto) else [])
    fig = Figure(figsize=(11.0, 1.6 + 0.34 * len(table) + 0.8 * (len(panels) - 1)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": [len(p[0]) for p in panels]})[:, 0]
    for ax, (t, title, b, xm) in zip(axes, panels):
        _ablation_panel(ax, t, b, xm)
        ax.set_title(title, fontsize=10, loc="left")
        if xm is not None:
            ax.set_xlim(right=xm * 1.0005)
        ax.ticklabel_format(axis="x", useOffset=False)
        ax.set_xlabel(f"{metric_label(metric)} (lower is better)", fontsize=10)
    handles = [axes[0].plot([], [], "o", color=c)[0] for lv, c in LEVER_COLORS.items() if lv in set(table["lever"])]
    names = [lv for lv in LEVER_COLORS if lv in set(table["lever"])]
    if base is not None:
        handles.append(axes[0].fill_between([], [], color=GREY, alpha=0.15))
        names.append("baseline mean (dashed) and 95 % CI (band)")
    fig.legend(handles, names, loc="outside lower center", ncols=4, fontsize=9)
    ns = sorted({int(n) for n in table["n"]})
    fig.suptitle(f"Every configuration at the same budget, grouped by lever: {metric_label(metric)}, "
                 f"mean and 95 % t interval (n = {'/'.join(map(str, ns))} seeds)", fontsize=12)
    return fig
