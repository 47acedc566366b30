"""The CMS schedule (when each level updates) and how far each level's parameters move."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nlcore.report.figures.common import GREY, level_color, new_figure, read_json, read_metrics


def update_steps(levels: Mapping[str, int], steps: int, partial: str = "flush") -> dict[str, tuple[list[int], bool]]:
    """Per level: the 1-based steps at which it updates (from `CMS.due`), and whether a final
    partial chunk is flushed at the last step (Eq. 31: C_l divides the step)."""
    from nlcore.cms import CMS
    from nlcore.config import CMSConfig, LevelConfig

    cfg = CMSConfig(levels=tuple(LevelConfig(name, chunk=int(c)) for name, c in levels.items()), partial=partial)
    cms = CMS(cfg, {})  # the schedule only: no parameters
    hits: dict[str, list[int]] = {n: [] for n in levels}
    for step in range(1, steps + 1):
        for n in cms.due(step):
            hits[n].append(step)
    return {n: (hits[n], partial == "flush" and steps % int(levels[n]) != 0) for n in levels}


def cms_timeline(levels: Mapping[str, int], steps: int, partial: str = "flush") -> Figure:
    """When each CMS level updates (left: one tick per update) and how often (right)."""
    sched = update_steps(levels, steps, partial)
    fig, (ax, bx) = new_figure(9.0, 0.6 + 0.55 * len(levels) + 1.2, ncols=2,
                            gridspec_kw={"width_ratios": [4, 1.3]}, sharey=True)
    names = list(levels)
    counts = []
    for i, name in enumerate(names):
        y = len(names) - 1 - i  # fastest on top
        hits, flushed = sched[name]
        color = level_color(name, i)
        ax.scatter(hits, [y] * len(hits), marker="|", s=260, linewidths=2, color=color)
        if flushed:
            ax.scatter([steps], [y], marker="o", s=60, facecolors="none", edgecolors=color, linewidths=1.5)
        counts.append(len(hits) + int(flushed))
        bx.barh(y, counts[-1], color=color, height=0.5)
        bx.text(counts[-1], y, f" {counts[-1]}", va="center", fontsize=10)
    ax.set_yticks(range(len(names)), [f"{n} (C={levels[n]})" for n in reversed(names)])
    ax.set_xlim(0.5, steps + 0.5)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel("training step")
    ax.set_title(f"Update schedule over {steps} steps (Eq. 31: level updates when C divides the step)",
                 fontsize=11, loc="left")
    if any(f for _, f in sched.values()):
        ax.scatter([], [], marker="o", facecolors="none", edgecolors=GREY, label="flushed partial chunk")
        ax.legend(loc="upper right", bbox_to_anchor=(1.0, -0.18), ncols=1)
    bx.set_xscale("log")
    bx.set_xlabel("updates (log scale)")
    bx.set_xlim(0.7, max(counts) * 4 if counts else 10)
    bx.grid(axis="y", visible=False)
    ax.grid(axis="y", visible=False)
    return fig


# ---------------------------------------------------------------------------- per-run telemetry


def cumulative_change(run_dir: str | Path) -> pd.DataFrame:
    """Per logged step and level: the cumulative parameter change sum_k ||Delta theta_k||.

    Each log interval's sum is (updates in the interval) x (norm of the interval's last update),
    exact for a level that updates at most once per interval. Columns: step, level, updates, change.
    """
    rows = []
    prev_updates: dict[str, int] = {}
    total: dict[str, float] = {}
    for rec in read_metrics(Path(run_dir)):
        upd = rec.get("updates") or {}
        last = rec.get("change_norm") or rec.get("delta_norm") or {}  # committed runs: "delta_norm"
        for level, count in upd.items():
            made = int(count) - prev_updates.get(level, 0)
            prev_updates[level] = int(count)
            if last.get(level) is not None:
                inc = float(last[level]) * made
            else:
                inc = 0.0
            total[level] = total.get(level, 0.0) + inc
            rows.append({"step": rec["step"], "level": level, "updates": int(count), "change": total[level]})
    return pd.DataFrame(rows, columns=["step", "level", "updates", "change"])


def effective_learning(run_dirs: Mapping[str, str | Path] | Sequence[str | Path]) -> Figure:
    """Cumulative parameter-change norm per level against training step, one panel per run
    (log scale: a level that barely moves sits decades below the others)."""
    items = list(run_dirs.items()) if isinstance(run_dirs, Mapping) else [(Path(p).parent.name, p) for p in run_dirs]
    if not items:
        raise ValueError("effective_learning: no runs given")
    fig, axes = new_figure(4.2 * len(items) + 0.4, 4.2, ncols=len(items), sharey=True)
    handles: dict[str, object] = {}
    for ax, (title, run) in zip(axes, items):
        df = cumulative_change(run)
        chunks = {lv["name"]: lv["chunk"] for lv in read_json(Path(run) / "meta.json")["config"]["cms"]["levels"]}
        for i, (level, g) in enumerate(df.groupby("level", sort=False)):
            y = g["change"].to_numpy(dtype=float)
            y = np.where(y > 0, y, np.nan)  # log scale: before the first update there is nothing
            label = f"{level} (C={chunks.get(level, '?')})" if np.isfinite(y).any() else f"{level}: never updated"
            (line,) = ax.plot(g["step"], y, color=level_color(level, i), label=label)
            handles.setdefault(label, line)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(title, fontsize=11)
    axes[0].set_ylabel("cumulative ‖Δθ‖ (L2, summed over updates)")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(4, len(handles)))
    fig.suptitle("Effective learning per CMS level", fontsize=12)
    return fig


# ---------------------------------------------------------------------------- the registered grid


def _level_text(lv, lr_policy: str) -> str:
    lr = lv.lr / lv.chunk if lr_policy == "divide_by_chunk" else lv.lr
    extra = f", momentum {lv.momentum:g}" if lv.optimizer == "sgd" and lv.momentum else ""
    scaled = f" (= {lv.lr:g}/{lv.chunk})" if lr_policy == "divide_by_chunk" and lv.chunk > 1 else ""
    return f"C={lv.chunk}: {lv.optimizer}, lr {lr:.3g}{scaled}{extra}"


def config_table(stem: str, mode: str = "full") -> pd.DataFrame:
    """One row per configuration registered in `nlcore.experiments.EXPERIMENTS[stem]`: its CMS
    levels (chunk, optimizer, effective learning rate), aggregation and gradient clip, the FFN
    levels' initialisation and LayerNorm + residual, and the overrides that make it, all resolved
    from the registry in `mode` (nothing typed by hand)."""
    from nlcore.config import apply_overrides, preset
    from nlcore.experiments import EXPERIMENTS

    exp = EXPERIMENTS[stem]
    grid, _, common = exp.grid(mode)
    rows = {}
    for gc in grid:
        cfg = apply_overrides(preset(gc.preset), [*common, *gc.overrides])
        row = {lv.name: _level_text(lv, cfg.cms.lr_policy) for lv in cfg.cms.levels}
        row.update({"aggregation": cfg.cms.aggregation, "grad clip": cfg.cms.grad_clip,
                    "FFN output init": "zero" if cfg.model.zero_init_ffn_out else "random",
                    "LayerNorm + residual": "yes" if cfg.model.norm_residual else "no",
                    "overrides": " ".join(o for o in gc.overrides if not o.startswith("model.zero_init")) or "—"})
        rows[gc.label] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "configuration"
    return df


def paired_finding(diffs: pd.DataFrame) -> str:
    """A title that states what `diffs` (`nlcore.report.notebook.paired_differences`) shows, one
    line per baseline: which configurations are below it, above it, or not separated from it
    (paired 95 % t interval containing 0, or a single seed)."""
    lines = []
    for base in dict.fromkeys(diffs["baseline"]):
        d = diffs[diffs["baseline"] == base].sort_values("mean")
        lower = list(d[d["ci_high"] < 0]["config"])
        higher = list(d[d["ci_low"] > 0]["config"])
        rest = [c for c in d["config"] if c not in lower and c not in higher]
        parts = [f"{label} {', '.join(cs)}" for label, cs in
                 (("below:", lower), ("above:", higher), ("not separated:", rest)) if cs]
        lines.append(f"vs {base}: " + "; ".join(parts))
    return "\n".join(lines)
