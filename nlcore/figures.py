"""The notebooks' figures and tables, each drawn from results files only.

Every function reads what an experiment wrote (`summary.json` records, and the per-run
`runs/<config>/seed<k>/{summary.json,metrics.jsonl,meta.json}`) and returns a matplotlib
`Figure` (or a DataFrame), so `REUSE_RESULTS=True` re-plots committed FULL results in seconds.
The one exception is `cms_timeline`, which draws the CMS schedule itself (`nlcore.cms.CMS.due`).

Figures are `matplotlib.figure.Figure` objects, not pyplot ones: no global figure state, nothing
to close. Colours come from the Okabe–Ito palette of `nlcore.plotting`; axes carry units;
every interval is a percentile-bootstrap 95 % CI across seeds (`nlcore.stats`) and says its n.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nlcore.plotting import CYCLE, PALETTE, band

# Units for the metrics the experiments record (axis labels and table headers).
METRIC_LABELS = {
    "valid_bpc": "validation bits per character",
    "test_bpc": "test bits per character",
    "train_bpc": "training bits per character",
    "train_loss": "training loss (nats per character)",
    "train_loss_last100": "training loss, last 100 steps (nats per character)",
    "train_ppl_last100": "training perplexity per character, last 100 steps",
    "chars_per_s": "throughput (characters per second)",
}
LEVEL_COLORS = {"fast": PALETTE["vermillion"], "medium": PALETTE["blue"], "slow": PALETTE["bluish_green"],
                "untrained": PALETTE["black"]}
_GREY = "#7f7f7f"


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def _level_color(name: str, i: int) -> str:
    return LEVEL_COLORS.get(name, CYCLE[i % len(CYCLE)])


def _figure(width: float = 6.4, height: float = 4.0, ncols: int = 1, **kw) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False, **kw)[0]
    return fig, axes


# ---------------------------------------------------------------------------- run files


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


def _read_json(path: Path):
    from nlcore.results import read_json

    return read_json(path)


def _metrics(run_dir: Path) -> list[dict]:
    from nlcore.results import read_metrics

    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (the per-step telemetry of that run)")
    return sorted(read_metrics(path), key=lambda r: r.get("step", 0))


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    from nlcore.stats import bootstrap_ci

    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    return bootstrap_ci(v, n_boot=2000)


def _seed_curves(curves: list[pd.Series]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Align per-seed curves on their index; return x, mean, lo, hi (per x) and n seeds."""
    table = pd.concat(curves, axis=1).sort_index()  # (x, seeds)
    stats = np.array([_mean_ci(row) for row in table.to_numpy(dtype=np.float64)])  # (x, 3)
    return table.index.to_numpy(), stats[:, 0], stats[:, 1], stats[:, 2], len(curves)


# ---------------------------------------------------------------------------- the CMS schedule


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
    fig, (ax, bx) = _figure(9.0, 0.6 + 0.55 * len(levels) + 1.2, ncols=2,
                            gridspec_kw={"width_ratios": [4, 1.3]}, sharey=True)
    names = list(levels)
    counts = []
    for i, name in enumerate(names):
        y = len(names) - 1 - i  # fastest on top
        hits, flushed = sched[name]
        color = _level_color(name, i)
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
        ax.scatter([], [], marker="o", facecolors="none", edgecolors=_GREY, label="flushed partial chunk")
        ax.legend(loc="upper right", bbox_to_anchor=(1.0, -0.18), ncols=1)
    bx.set_xscale("log")
    bx.set_xlabel("updates (log scale)")
    bx.set_xlim(0.7, max(counts) * 4 if counts else 10)
    bx.grid(axis="y", visible=False)
    ax.grid(axis="y", visible=False)
    return fig


def _timeline_for(fast: int, medium: int, slow: int, steps: int) -> Figure:
    return cms_timeline({"fast": fast, "medium": medium, "slow": slow}, steps)


def cms_timeline_widget(steps: int = 64, fast: int = 1, medium: int = 4, slow: int = 16, max_chunk: int = 64):
    """Sliders for the three chunk sizes and the number of steps that redraw `cms_timeline`
    (an `ipywidgets.interactive`; headless runs just render its first figure)."""
    from ipywidgets import IntSlider, interactive

    def slider(value: int, lo: int, hi: int, desc: str) -> IntSlider:
        return IntSlider(value=value, min=lo, max=hi, step=1, description=desc, continuous_update=False)

    return interactive(_timeline_for, fast=slider(fast, 1, max_chunk, "fast C"),
                       medium=slider(medium, 1, max_chunk, "medium C"), slow=slider(slow, 1, max_chunk, "slow C"),
                       steps=slider(steps, 8, 256, "steps"))


# ---------------------------------------------------------------------------- per-run telemetry


def cumulative_change(run_dir: str | Path) -> pd.DataFrame:
    """Per logged step and level: the cumulative parameter change sum_k ||Delta theta_k||.

    Uses `delta_norm_sum` when the trainer logs it; otherwise estimates each log interval's
    sum as (updates in the interval) x (norm of the interval's last update), which is exact for
    a level that updates at most once per interval. Columns: step, level, updates, change.
    """
    rows = []
    prev_updates: dict[str, int] = {}
    total: dict[str, float] = {}
    for rec in _metrics(Path(run_dir)):
        upd = rec.get("updates") or {}
        exact = rec.get("delta_norm_sum") or {}
        last = rec.get("delta_norm") or {}
        for level, count in upd.items():
            made = int(count) - prev_updates.get(level, 0)
            prev_updates[level] = int(count)
            if exact.get(level) is not None:
                inc = float(exact[level])
            elif last.get(level) is not None:
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
    fig, axes = _figure(4.2 * len(items) + 0.4, 4.2, ncols=len(items), sharey=True)
    handles: dict[str, object] = {}
    for ax, (title, run) in zip(axes, items):
        df = cumulative_change(run)
        chunks = {lv["name"]: lv["chunk"] for lv in _read_json(Path(run) / "meta.json")["config"]["cms"]["levels"]}
        for i, (level, g) in enumerate(df.groupby("level", sort=False)):
            y = g["change"].to_numpy(dtype=float)
            y = np.where(y > 0, y, np.nan)  # log scale: before the first update there is nothing
            label = f"{level} (C={chunks.get(level, '?')})" if np.isfinite(y).any() else f"{level}: never updated"
            (line,) = ax.plot(g["step"], y, color=_level_color(level, i), label=label)
            handles.setdefault(label, line)
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(title, fontsize=11)
    axes[0].set_ylabel("cumulative ‖Δθ‖ (L2, summed over updates)")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(4, len(handles)))
    fig.suptitle("Effective learning per CMS level", fontsize=12)
    return fig


# ---------------------------------------------------------------------------- across seeds


def _records(summary_records: Iterable[Mapping], metric: str) -> dict[str, Mapping]:
    return {str(r["config"]): r for r in summary_records if r["metric"] == metric}


def _ci_ends(r: Mapping) -> tuple[float, float]:
    vals = [float(r[k]) for k in ("mean", "ci_low", "ci_high") if r.get(k) is not None and math.isfinite(r[k])]
    return (min(vals), max(vals)) if vals else (math.inf, -math.inf)


def _ci_panel(ax, recs: Mapping[str, Mapping], labels: list[str], color: str, show_n: bool,
              reference: float | None, reference_label: str) -> None:
    """Points with 95 % CI whiskers for `labels` on `ax`, best (first) on top."""
    for y, c in enumerate(labels):
        r = recs[c]
        mean = math.nan if r["mean"] is None else float(r["mean"])
        lo, hi = (math.nan if r.get(k) is None else float(r[k]) for k in ("ci_low", "ci_high"))
        if math.isfinite(lo) and math.isfinite(hi):
            ax.errorbar(mean, y, xerr=[[mean - lo], [hi - mean]], fmt="o", color=color, capsize=3, ms=5)
        else:
            ax.plot(mean, y, "o", color=color, ms=5)
    names = [c if not show_n else f"{c} (n={int(recs[c]['n_seeds'])})" for c in labels]
    ax.set_yticks(range(len(labels)), names)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # best on top
    ax.grid(axis="y", visible=False)
    if reference is None or not math.isfinite(reference):
        return
    lo_all = min(_ci_ends(recs[c])[0] for c in labels)
    hi_all = max(_ci_ends(recs[c])[1] for c in labels)
    span = max(hi_all - lo_all, 1e-9)
    if lo_all - 2 * span <= reference <= hi_all + 2 * span:
        ax.axvline(reference, color=_GREY, linestyle="--", linewidth=1.2, label=f"{reference_label} ({reference:.3f})")
    else:  # a line that far away would squash the differences that matter
        side = "right" if reference > hi_all else "left"
        ax.plot([], [], " ", label=f"{reference_label}: {reference:.3f} (off the axis, {side})")
    ax.legend(loc="best", fontsize=9)


def ci_bars(summary_records: Iterable[Mapping], metric: str = "valid_bpc", order: Sequence[str] | None = None,
            *, lower_is_better: bool = True, reference: float | None = None, reference_label: str = "reference",
            group_prefix: tuple[str, str] | None = None) -> Figure:
    """Mean and 95 % bootstrap CI across seeds per configuration, ranked best first (or in
    `order`); n in the title (or per row when it differs). `reference` draws a vertical line
    (e.g. the unigram level) where it fits the axis, else names it. `group_prefix=(prefix, name)`
    puts configurations whose label starts with `prefix` in a second panel with its own axis,
    so neither group's differences are squashed by the distance between the groups."""
    recs = _records(summary_records, metric)
    if not recs:
        raise ValueError(f"ci_bars: no records for metric {metric!r}")
    labels = [c for c in order if c in recs] if order is not None else \
        sorted(recs, key=lambda c: (recs[c]["mean"] is None, (recs[c]["mean"] or 0) * (1 if lower_is_better else -1)))
    ns = {int(recs[c]["n_seeds"]) for c in labels}
    groups = [("", labels)]
    if group_prefix is not None:
        inside = [c for c in labels if c.startswith(group_prefix[0])]
        groups = [(g, ls) for g, ls in (("this repository's settings", [c for c in labels if c not in inside]),
                                         (group_prefix[1], inside)) if ls]
    fig = Figure(figsize=(6.8, 1.1 + 0.36 * len(labels) + 0.5 * (len(groups) - 1)), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False,
                        gridspec_kw={"height_ratios": [max(len(ls), 1) for _, ls in groups]})[:, 0]
    colors = (PALETTE["blue"], PALETTE["orange"])
    for i, (ax, (name, ls)) in enumerate(zip(axes, groups)):
        _ci_panel(ax, recs, ls, colors[i % 2], len(ns) > 1, reference, reference_label)
        if name:
            ax.set_title(name, fontsize=10, loc="left", color=colors[i % 2])
    better = "lower" if lower_is_better else "higher"
    axes[-1].set_xlabel(f"{metric_label(metric)} ({better} is better)")
    n_text = f"n = {ns.pop()} seed(s) each" if len(ns) == 1 else "n per row"
    fig.suptitle(f"{metric_label(metric).capitalize()}: mean and 95 % bootstrap CI ({n_text})", fontsize=11)
    return fig


def training_curves(exp_dir: str | Path, configs: Sequence[str], metric: str = "train_bpc") -> Figure:
    """`metric` from each run's metrics.jsonl against training step: mean across seeds with a
    95 % bootstrap band; the right panel zooms on the second half of training, where the
    configurations separate. For valid_bpc the final whole-split value (summary.json) is the
    last point; earlier points are intermediate evaluations on the first windows of the split."""
    fig, (ax, zx) = _figure(10.0, 4.2, ncols=2)
    last_step = 0
    for i, config in enumerate(configs):
        curves = []
        for run in _need_runs(exp_dir, config):
            pts = {r["step"]: r[metric] for r in _metrics(run) if r.get(metric) is not None}
            if metric == "valid_bpc":
                s = _read_json(run / "summary.json")
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


def bpc_by_position(exp_dir: str | Path, configs: Sequence[str], log_x: bool = True) -> Figure:
    """Validation bits per character against the position inside the window (from each run's
    summary `valid_bpc_by_position`), mean across seeds with a 95 % band. Carried state should
    help most at the first positions, where a reset model has no context at all."""
    fig, (ax,) = _figure(6.8, 4.2)
    for i, config in enumerate(configs):
        curves = []
        for run in _need_runs(exp_dir, config):
            by_pos = _read_json(run / "summary.json").get("valid_bpc_by_position")
            if not by_pos:
                raise ValueError(f"{run}/summary.json has no valid_bpc_by_position")
            curves.append(pd.Series(by_pos, index=np.arange(1, len(by_pos) + 1), name=run.name, dtype=float))
        x, mean, lo, hi, n = _seed_curves(curves)
        band(ax, x, mean, lo, hi, label=config, n=n, color=CYCLE[i % len(CYCLE)])
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("position inside the window (characters since the window start)")
    ax.set_ylabel(metric_label("valid_bpc"))
    ax.set_title("Where in the window carried state helps (mean, 95 % CI band)", fontsize=11, loc="left")
    ax.legend(fontsize=9)
    return fig


# ---------------------------------------------------------------------------- tables


def summary_table(summary_records: Iterable[Mapping], metrics: Sequence[str] = ("valid_bpc", "test_bpc"),
                  order: Sequence[str] | None = None, failed: Mapping[str, str] | None = None,
                  digits: int = 3) -> pd.DataFrame:
    """One row per configuration, one column per metric: `mean ± half-width [lo, hi] (n=k)`.
    Configurations in `failed` get a row that says so, so a missing result is never silent."""
    from nlcore.results import format_ci

    recs = list(summary_records)
    configs = list(order) if order is not None else list(dict.fromkeys(str(r["config"]) for r in recs))
    for c in dict.fromkeys(str(r["config"]) for r in recs):
        if c not in configs:
            configs.append(c)
    table = {m: _records(recs, m) for m in metrics}
    rows = {}
    for c in configs:
        if failed and c in failed:
            rows[c] = {metric_label(m): f"FAILED ({failed[c][:60]})" for m in metrics}
        elif any(c in table[m] for m in metrics):
            rows[c] = {metric_label(m): (format_ci(table[m][c], digits) if c in table[m] else "—") for m in metrics}
    for c in failed or {}:
        if c not in rows:
            rows[c] = {metric_label(m): f"FAILED ({failed[c][:60]})" for m in metrics}
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[metric_label(m) for m in metrics])
    df.index.name = "configuration"
    return df
