"""Orientation figures: the nested LSTM as levels with their update frequencies, the bits-per-character
ladder, and what a Student-t interval over a few seeds means next to a naive ±2 standard errors."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from nlcore.report.figures.common import GREY, level_color, new_figure
from nlcore.report.plotting import PALETTE

# The nested LSTM's parts, input to output, as (label, the top-level module names that hold them).
_PARTS = (("embedding", ("embed",)), ("LSTM", ("lstm",)), ("FFN (medium)", ("ffn_medium", "norm_medium")),
          ("FFN (slow)", ("ffn_slow", "norm_slow")), ("head", ("head", "norm_out")))


def level_parts(cfg, vocab_size: int) -> list[dict]:
    """Per part of the nested LSTM built from `cfg` (a TrainConfig): its CMS level, chunk C,
    optimizer and parameter count, read from the model's own `level_of` and the config's levels."""
    from nlcore.models import build_model

    chunks = {lv.name: lv for lv in cfg.cms.levels}
    model = build_model(cfg.model, vocab_size, chunks=(chunks["medium"].chunk, chunks["slow"].chunk))
    rows = []
    for label, tops in _PARTS:
        named = [(n, p) for n, p in model.named_parameters() if n.split(".")[0] in tops]
        if not named:
            continue
        level = model.level_of(named[0][0])
        spec = chunks[level]
        rows.append({"part": label, "level": level, "chunk": spec.chunk, "optimizer": spec.optimizer,
                     "lr": spec.lr, "momentum": spec.momentum if spec.optimizer == "sgd" else 0.0, "params": sum(p.numel() for _, p in named)})
    return rows


def level_diagram(cfg, vocab_size: int) -> Figure:
    """The nested LSTM drawn input to output, each part coloured by its CMS level, with how often
    that level updates (every C steps: steps / C updates in a run of `cfg.steps` steps)."""
    rows = level_parts(cfg, vocab_size)
    fig, (ax,) = new_figure(10.0, 2.8)
    width, gap = 1.7, 0.45
    for i, r in enumerate(rows):
        x = i * (width + gap)
        color = level_color(r["level"], i)
        ax.add_patch(FancyBboxPatch((x, 0.0), width, 1.0, boxstyle="round,pad=0.04", facecolor=color, alpha=0.22,
                                    edgecolor=color, linewidth=2))
        ax.text(x + width / 2, 0.68, r["part"], ha="center", va="center", fontsize=11, weight="bold")
        ax.text(x + width / 2, 0.32, f"{r['params']:,} params", ha="center", va="center", fontsize=9)
        updates = cfg.steps // r["chunk"] + (1 if cfg.steps % r["chunk"] and cfg.cms.partial == "flush" else 0)
        opt = f"{r['optimizer']}, lr {r['lr']:g}" + (f", mom. {r['momentum']:g}" if r["momentum"] else "")
        ax.text(x + width / 2, -0.12, f"{r['level']} level, C = {r['chunk']}\n{opt}\n"
                f"{updates:,} updates", ha="center", va="top", fontsize=9, color=color)
        if i:
            ax.annotate("", xy=(x - 0.04, 0.5), xytext=(x - gap + 0.04, 0.5),
                        arrowprops={"arrowstyle": "->", "color": GREY, "lw": 1.5})
    ax.set_xlim(-0.2, len(rows) * (width + gap) - gap + 0.2)
    ax.set_ylim(-0.72, 1.12)
    ax.axis("off")
    chunks = sorted({r["chunk"] for r in rows})
    ax.set_title(f"One model, {len(chunks)} update frequencies: its levels apply their gradients every "
                 f"{', '.join(map(str, chunks))} steps (preset {cfg.name!r}, {cfg.steps:,} steps)",
                 fontsize=11, loc="left")
    return fig


def bpc_ladder(levels: Mapping[str, float], highlight: Sequence[str] = ()) -> Figure:
    """Bits per character of a few models and reference levels on one axis, best at the bottom;
    labels in `highlight` (the reference levels) are drawn in grey."""
    items = sorted(levels.items(), key=lambda kv: -kv[1])
    fig, (ax,) = new_figure(7.6, 0.9 + 0.42 * len(items))
    for y, (name, v) in enumerate(items):
        ref = name in highlight
        ax.barh(y, v, color=GREY if ref else PALETTE["blue"], alpha=0.5 if ref else 0.9, height=0.6)
        ax.text(v, y, f" {v:.2f}", va="center", fontsize=10)
    ax.set_yticks(range(len(items)), [n for n, _ in items])
    ax.set_ylim(len(items) - 0.5, -0.5)
    ax.set_xlim(0, max(v for _, v in items) * 1.15)
    ax.set_xlabel("validation bits per character (lower is better)")
    ax.grid(axis="y", visible=False)
    return fig


def _coverage(n: int, multiplier: float, draws: int = 20000) -> float:
    """Fraction of `draws` samples of n normal values whose mean ± multiplier·s/√n covers the true mean."""
    rng = np.random.default_rng(12345)
    x = rng.standard_normal((draws, n))  # (draws, n)
    half = multiplier * x.std(axis=1, ddof=1) / math.sqrt(n)
    return float((np.abs(x.mean(axis=1)) <= half).mean())


def t_interval_figure(n: int = 3, spread: float = 0.01, centre: float = 1.70, max_n: int = 10) -> Figure:
    """Left: n seed values with sample standard deviation `spread` around `centre`, their
    Student-t 95 % interval of the mean (`nlcore.stats.t_ci`) and the naive mean ± 2 s/√n.
    Right: how often each interval covers the true mean, over many simulated sets of n seeds."""
    from nlcore.stats import t_ci, t_quantile

    if n < 2:
        raise ValueError(f"t_interval_figure: need n >= 2 seeds for an interval, got {n}")
    z = np.linspace(-1.0, 1.0, n)  # evenly spread seeds, rescaled to the requested sample std
    values = centre + spread * (z - z.mean()) / z.std(ddof=1)  # (n,)
    mean, lo, hi = t_ci(values)
    naive = 2.0 * values.std(ddof=1) / math.sqrt(n)
    t = t_quantile(0.975, n - 1)
    fig, (ax, bx) = new_figure(10.0, 3.8, ncols=2, gridspec_kw={"width_ratios": [1.2, 1]})
    ax.scatter(values, [2] * n, color=GREY, zorder=3, label=f"the {n} seeds")
    ax.errorbar(mean, 1, xerr=[[mean - lo], [hi - mean]], fmt="o", color=PALETTE["blue"], capsize=4,
                label=f"Student-t 95 %: ± {t:.2f} s/√n")
    ax.errorbar(mean, 0, xerr=naive, fmt="o", color=PALETTE["vermillion"], capsize=4, label="naive: ± 2 s/√n")
    ax.set_yticks([0, 1, 2], ["naive ± 2 s/√n", "Student-t 95 %", "seeds"])
    ax.set_ylim(-0.6, 2.6)
    ax.set_xlabel("validation bits per character (example values)")
    ax.set_title(f"n = {n}, s = {spread:g}: the t interval is {t / 2:.1f}× wider", fontsize=11, loc="left")
    ax.grid(axis="y", visible=False)
    ns = np.arange(2, max(max_n, n) + 1)
    cover_t = [_coverage(int(k), t_quantile(0.975, int(k) - 1)) for k in ns]
    cover_naive = [_coverage(int(k), 2.0) for k in ns]
    bx.plot(ns, cover_t, "o-", color=PALETTE["blue"], label="Student-t 95 %")
    bx.plot(ns, cover_naive, "s-", color=PALETTE["vermillion"], label="naive ± 2 s/√n")
    bx.axhline(0.95, color=GREY, linestyle="--", linewidth=1, label="95 % (the promise)")
    bx.axvline(n, color=GREY, linewidth=0.8)
    bx.set_xlabel("seeds n")
    bx.set_ylabel("intervals that cover the true mean")
    bx.set_ylim(0.5, 1.0)
    bx.legend(fontsize=9, loc="lower right")
    bx.set_title(f"at n = {n} the naive interval covers {cover_naive[n - 2]:.0%}", fontsize=11, loc="left")
    return fig
