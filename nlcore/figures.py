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


# ---------------------------------------------------------------------------- 02 · surprise


def surprise_scale(run_dir: str | Path) -> pd.DataFrame:
    """Per logged step and weighted level, the surprise telemetry of one run and its scale.

    From `metrics.jsonl` (`surprise`: aux_loss = λ·MSE(y, t), signal_norm = ‖∇_y L‖_F over all
    N = B·T·d elements, clip_frac) and the run's config (λ, c, B, T, d):

    - rms_signal = ‖∇_y L‖_F / √N: the typical element of ∇_y L, an upper bound on the typical
      element of the target t = clip(∇_y L) (clipping only shrinks);
    - rms_residual = √(aux_loss / λ) = rms(y − t);
    - ratio r = rms_signal / rms_residual; the auxiliary loss differs from λ·mean(y²) by at most
      a relative 2r + r² (`gap_bound`), and its gradient k(y − t) from k·y by a relative r.

    Since max_e |g_e| ≤ ‖g‖_F, a signal norm below c proves that nothing was clipped.
    Columns: step, level, weight, clip, numel, aux_loss, signal_norm, clip_frac, rms_signal,
    rms_residual, ratio, gap_bound. Empty for a run without the objective.
    """
    cfg = _read_json(Path(run_dir) / "meta.json")["config"]
    weights = {k: float(v) for k, v in (cfg["surprise"]["weights"] or {}).items() if v}
    numel = cfg["data"]["batch_size"] * cfg["data"]["seq_len"] * cfg["model"]["d_model"]  # N = B·T·d
    rows = []
    for rec in _metrics(Path(run_dir)):
        for level, m in (rec.get("surprise") or {}).items():
            if level not in weights or m.get("signal_norm") is None:
                continue
            rms_signal = m["signal_norm"] / math.sqrt(numel)  # ‖g‖_F / √N
            rms_residual = math.sqrt(max(m["aux_loss"], 0.0) / weights[level])  # rms(y − t)
            r = rms_signal / rms_residual if rms_residual > 0 else math.inf
            rows.append({"step": rec["step"], "level": level, "weight": weights[level],
                         "clip": float(cfg["surprise"]["clip"]), "numel": numel, "aux_loss": m["aux_loss"],
                         "signal_norm": m["signal_norm"], "clip_frac": m["clip_frac"],
                         "rms_signal": rms_signal, "rms_residual": rms_residual, "ratio": r,
                         "gap_bound": 2 * r + r * r})
    cols = ["step", "level", "weight", "clip", "numel", "aux_loss", "signal_norm", "clip_frac", "rms_signal",
            "rms_residual", "ratio", "gap_bound"]
    return pd.DataFrame(rows, columns=cols)


def surprise_telemetry(run_dir: str | Path, title: str | None = None) -> Figure:
    """Three panels from one run's telemetry, per weighted level against the step (log y):
    the auxiliary loss λ·MSE(y, t); the signal norm ‖∇_y L‖_F beside the clip threshold c;
    the typical element of the target (≤ ‖∇_y L‖_F/√N) beside the typical element of y − t."""
    df = surprise_scale(run_dir)
    if df.empty:
        raise ValueError(f"{run_dir}: no surprise telemetry (a run without the objective?)")
    fig, (ax, bx, cx) = _figure(13.0, 4.0, ncols=3)
    for i, (level, g) in enumerate(df.groupby("level", sort=False)):
        color = _level_color(level, i)
        lam = g["weight"].iloc[0]
        ax.plot(g["step"], g["aux_loss"], "o-", ms=3, color=color, label=f"{level} (λ={lam:g})")
        bx.plot(g["step"], g["signal_norm"], "o-", ms=3, color=color, label=f"{level}: ‖∇_y L‖_F")
        cx.plot(g["step"], g["rms_residual"], "o-", ms=3, color=color, label=f"{level}: rms(y − t)")
        cx.plot(g["step"], g["rms_signal"], "s--", ms=3, color=color, label=f"{level}: rms(t) ≤ ‖∇_y L‖_F/√N")
    clip = float(df["clip"].iloc[0])
    bx.axhline(clip, color=_GREY, linestyle="--", linewidth=1.2, label=f"clip threshold c = {clip:g}")
    top = float(df["clip_frac"].max())
    bx.plot([], [], " ", label="clip_frac = 0 at every logged step" if top == 0 else f"clip_frac: up to {top:.3g}")
    ax.set_title("auxiliary loss λ·MSE(y, t)", fontsize=11)
    bx.set_title("surprise signal norm vs the clip threshold", fontsize=11)
    cx.set_title(f"typical element: target vs y − t (N = {int(df['numel'].iloc[0]):,})", fontsize=11)
    for axis in (ax, bx, cx):
        axis.set_yscale("log")
        axis.set_xlabel("training step")
        axis.legend(fontsize=8)
    fig.suptitle(title or f"Surprise telemetry of {Path(run_dir).parent.name}/{Path(run_dir).name}", fontsize=12)
    return fig


def ci_panels(summary_records: Iterable[Mapping], metric: str,
              panels: Sequence[tuple[str, str, float | None, str]], *, lower_is_better: bool = True) -> Figure:
    """Like `ci_bars`, one panel per label prefix with its own axis and reference line:
    `panels` = [(prefix, title, reference or None, reference_label), ...]; rows ranked best
    first inside each panel; a prefix without records is skipped."""
    recs = _records(summary_records, metric)
    groups = []
    for prefix, title, ref, ref_label in panels:
        ls = sorted((c for c in recs if c.startswith(prefix)),
                    key=lambda c: (recs[c]["mean"] is None, (recs[c]["mean"] or 0) * (1 if lower_is_better else -1)))
        if ls:
            groups.append((title, ls, ref, ref_label))
    if not groups:
        raise ValueError(f"ci_panels: no records for metric {metric!r} with prefixes {[p[0] for p in panels]}")
    n_rows = sum(len(g[1]) for g in groups)
    ns = {int(recs[c]["n_seeds"]) for g in groups for c in g[1]}
    fig = Figure(figsize=(7.4, 1.2 + 0.4 * n_rows + 0.7 * (len(groups) - 1)), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False, gridspec_kw={"height_ratios": [len(g[1]) for g in groups]})[:, 0]
    colors = (PALETTE["blue"], PALETTE["orange"], PALETTE["bluish_green"])
    for i, (ax, (title, ls, ref, ref_label)) in enumerate(zip(axes, groups)):
        _ci_panel(ax, recs, ls, colors[i % 3], len(ns) > 1, ref, ref_label)
        ax.set_title(title, fontsize=10, loc="left", color=colors[i % 3])
        ax.set_xlabel(metric_label(metric), fontsize=9)
    n_text = f"n = {ns.pop()} seed(s) each" if len(ns) == 1 else "n per row"
    better = "lower" if lower_is_better else "higher"
    fig.suptitle(f"{metric_label(metric).capitalize()} ({better} is better): mean and 95 % bootstrap CI ({n_text})",
                 fontsize=11)
    return fig


def paired_diff_bars(diffs: pd.DataFrame, metric: str = "valid_bpc", *, strip: str = "") -> Figure:
    """Paired differences config − baseline (same seeds) with their 95 % bootstrap CIs, one panel
    per baseline, best (most negative) on top. The grey band is ± the half-width of the
    baseline's own (unpaired) 95 % CI: a difference inside it is smaller than the spread of
    the seeds. `diffs` as `nlcore.notebook.paired_differences` returns it; `strip` is removed
    from the row labels' start."""
    from matplotlib.ticker import MaxNLocator

    if diffs.empty:
        raise ValueError("paired_diff_bars: no differences to plot")
    bases = list(dict.fromkeys(diffs["baseline"]))
    fig = Figure(figsize=(7.4, 1.3 + 0.42 * len(diffs) + 0.7 * (len(bases) - 1)), layout="constrained")
    axes = fig.subplots(len(bases), 1, squeeze=False,
                        gridspec_kw={"height_ratios": [int((diffs["baseline"] == b).sum()) for b in bases]})[:, 0]
    for ax, base in zip(axes, bases):
        d = diffs[diffs["baseline"] == base].sort_values("mean")
        half = float(d["baseline_half_width"].iloc[0])
        if math.isfinite(half) and half > 0:
            ax.axvspan(-half, half, color=_GREY, alpha=0.18, linewidth=0,
                       label=f"± half-width of {base}'s own 95 % CI ({half:.4f})")
        ax.axvline(0.0, color=_GREY, linewidth=1.0)
        for y, r in enumerate(d.itertuples()):
            color = PALETTE["bluish_green"] if r.ci_high < 0 else PALETTE["vermillion"] if r.ci_low > 0 else PALETTE["blue"]
            if math.isfinite(r.ci_low) and math.isfinite(r.ci_high):
                ax.errorbar(r.mean, y, xerr=[[r.mean - r.ci_low], [r.ci_high - r.mean]], fmt="o", color=color,
                            capsize=3, ms=5)
            else:
                ax.plot(r.mean, y, "o", color=color, ms=5)
        labels = [f"{c[len(strip):] if strip and c.startswith(strip) else c} (n={n})" for c, n in zip(d["config"], d["n"])]
        ax.set_yticks(range(len(d)), labels)
        ax.set_ylim(len(d) - 0.5, -0.5)
        ax.grid(axis="y", visible=False)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.set_title(f"minus {base}, seed by seed", fontsize=10, loc="left")
        ax.set_xlabel(f"Δ {metric_label(metric)} (negative: better than {base})", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    fig.suptitle("Paired differences against the baseline: mean and 95 % bootstrap CI over seeds\n"
                 "(green: CI below 0, red: above 0, blue: contains 0)", fontsize=11)
    return fig


def bench_overheads(report: Mapping | str | Path, configs: Sequence[str] | None = None) -> pd.DataFrame:
    """A step-time report of `nlcore.bench` (the dict `nlcore.bench.load_report` returns, or the
    path of its JSON) as a table, one row per configuration: step time over the timed windows
    (median, min, max, IQR; ms) and the paired overhead against `seed_persistent` (median and
    min/q25/q75/max over the repeats), plus the device it ran on. `configs` selects and orders rows."""
    path = "the report"
    if not isinstance(report, Mapping):
        path, report = report, _read_json(Path(report))
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
    fig, (ax, bx) = _figure(11.0, 1.4 + 0.5 * len(table), ncols=2, sharey=True)
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
    bx.axvline(0, color=_GREY, linewidth=1.0)
    bx.set_xlabel("overhead vs seed_persistent (%; median, IQR, min–max)")
    for axis in (ax, bx):
        axis.grid(axis="y", visible=False)
    fig.suptitle(f"Training step time, measured on {table['device'].iloc[0]} "
                 f"({int(table['windows'].iloc[0])} interleaved windows)", fontsize=12)
    return fig


# ---------------------------------------------------------------------------- 04 · delta rule

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
    with a 95 % bootstrap band, one panel per value of `rows` × `cols` (e.g. d; key-norm
    spread, η). Log y between `ylim`: a mean outside it (or a diverged, non-finite seed) is
    drawn as a hollow marker at the edge, so an exact least-squares fit (≈ 1e-12) sits on the
    floor and a diverged rule on the ceiling. `runs`: tidy (method or config, load, seed, value,
    and the facet columns), as `nlcore.recall.run_recall_benchmark` or `nlcore recall` write it."""
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
                stats = np.array([_mean_ci(r) if np.isfinite(r).all() else (np.inf, np.nan, np.nan) for r in table])
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
        [], [], "o", mfc="white", mec=_GREY)[0]
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=3, fontsize=9)
    fig.suptitle("Associative recall of the latest value per key (correlated keys, with overwrites): "
                 "mean and 95 % bootstrap band over seeds", fontsize=11)
    return fig


# ---------------------------------------------------------------------------- 05 · ablations

LEVER_COLORS = {
    "baseline": PALETTE["black"],
    "CMS: chunks, lr policy, optimizer": PALETTE["blue"],
    "FFN output init": PALETTE["reddish_purple"],
    "surprise objective": PALETTE["orange"],
    "state policy": PALETTE["bluish_green"],
    "delta rule": PALETTE["vermillion"],
    "LayerNorm + residual": PALETTE["sky_blue"],
    "the prototype's settings": _GREY,
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
        ax.axvspan(base["ci_low"], base["ci_high"], color=_GREY, alpha=0.15, linewidth=0)
    if base is not None:
        ax.axvline(base["mean"], color=_GREY, linestyle="--", linewidth=1.0)
    for y, r in enumerate(t.itertuples()):
        color = LEVER_COLORS.get(r.lever, _GREY)
        if y > 0 and r.lever != t["lever"].iloc[y - 1]:  # a thin rule between lever groups
            ax.axhline(y - 0.5, color=_GREY, linewidth=0.5, alpha=0.6)
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
        tick.set_color(LEVER_COLORS.get(lever, _GREY))
    ax.set_ylim(len(t) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)


def ablation_ranking(table: pd.DataFrame, metric: str = "valid_bpc") -> Figure:
    """Every distinct configuration of several experiments, grouped by the lever it moves
    (the baseline first), ranked inside each group; mean and 95 % bootstrap CI, n per row,
    the baseline's mean (dashed) and CI (grey band) across the whole panel. Rows far worse than
    the rest are drawn as an arrow at the right edge with their numbers. Rows run with the
    prototype's settings get their own panel and axis. `table` as
    `nlcore.notebook.ablation_table` returns it."""
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
        handles.append(axes[0].fill_between([], [], color=_GREY, alpha=0.15))
        names.append("baseline mean (dashed) and 95 % CI (band)")
    fig.legend(handles, names, loc="outside lower center", ncols=4, fontsize=9)
    ns = sorted({int(n) for n in table["n"]})
    fig.suptitle(f"Every configuration at the same budget, grouped by lever: {metric_label(metric)}, "
                 f"mean and 95 % bootstrap CI (n = {'/'.join(map(str, ns))} seeds)", fontsize=12)
    return fig
