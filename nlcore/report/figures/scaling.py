"""Notebook 07's tables and figures: the learning-rate sweep, held-out bpc against training characters,
seconds of training and parameters, the ranking on two corpora, and bpc against the context an
article has given.

Everything is read from the runs an experiment wrote (`runs/<config>/seed<k>/{summary,meta}.json`)
and, for the context, from `context_<split>.csv` (`nlcore.experiments.scaling.context_table`). A
configuration's label names its model and, in 07_scaling, its budget (`hope_8.2M`) or, in
07_lr_sweep, its rate (`hope_lr0.004`). Intervals are Student-t 95 % intervals across seeds and
every legend says n; a point of one seed has no interval and its legend says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from nlcore.report.figures.common import GREY, mean_ci, metric_label, new_figure, read_json
from nlcore.report.figures.hope import color as model_color
from nlcore.report.plotting import PALETTE

_LABEL = re.compile(r"^(?P<model>.+?)(?:_lr(?P<lr>\d[\d.e+-]*)|_(?P<budget>\d+(?:\.\d+)?M))?$")
MARKERS = {"nested_lstm": "o", "transformer": "s", "titans": "^", "titans_norm": "^", "titans_linear": "v", "hope": "D",
           "hope_outer": "P"}
X_LABELS = {"chars": "training characters (log scale)", "params": "parameters (log scale)",
            "lr": "learning rate of the fast level, AdamW (log scale)"}


def parse_label(config: str) -> tuple[str, str | None]:
    """(model, budget) of a 07 label: `hope_8.2M` -> ("hope", "8.2M"); `hope_lr0.004` and `hope`
    -> ("hope", None)."""
    m = _LABEL.fullmatch(config)
    return m["model"], m["budget"]


def _number(summary: Mapping, key: str, keep: bool = True) -> float:
    """`summary[key]` as a float; NaN where absent, null or not kept (a run that did not finish)."""
    v = summary.get(key)
    return float(v) if v is not None and keep else math.nan


def scaling_runs(exp_dir: str | Path) -> pd.DataFrame:
    """One row per run under `exp_dir`/runs that has a summary.json, finished or not.

    Columns: experiment (the folder's name), config, model, budget, seed, status, corpus, steps,
    seq_len, chars (steps x B x T: the characters its schedule trains on), lr (the fast level's),
    params, valid_bpc, test_bpc, chars_per_s, train_s, entropy_rate, device. train_s is the
    summary's `train_time_s`, the seconds spent in training steps (evaluation and start-up left
    out), which equals chars / chars_per_s; the bpc and time columns are NaN unless the run finished.
    """
    exp_dir = Path(exp_dir)
    rows = []
    for path in sorted(exp_dir.glob("runs/*/seed*/summary.json")):
        run = path.parent
        s, meta = read_json(path), read_json(run / "meta.json")
        cfg, env = meta["config"], meta.get("environment") or {}
        data = cfg["data"]
        status = s.get("status", "finished")
        fast = next(lv for lv in cfg["cms"]["levels"] if lv["name"] == "fast")
        device = str(meta.get("device", "unknown"))
        device = (env.get("gpu_name") or device) if device.startswith("cuda") else device.upper()
        done = status == "finished"
        model, budget = parse_label(run.parent.name)
        rows.append({"experiment": exp_dir.name, "config": run.parent.name, "model": model, "budget": budget,
                     "seed": int(run.name[4:]), "status": status, "corpus": data["corpus"], "steps": cfg["steps"],
                     "seq_len": data["seq_len"], "chars": cfg["steps"] * data["batch_size"] * data["seq_len"],
                     "lr": float(fast["lr"]), "params": _number(s, "params"),
                     "valid_bpc": _number(s, "valid_bpc", done), "test_bpc": _number(s, "test_bpc", done),
                     "chars_per_s": _number(s, "chars_per_s", done), "train_s": _number(s, "train_time_s", done),
                     "entropy_rate": _number(s, "entropy_rate_bits"), "device": device})
    if not rows:
        raise FileNotFoundError(f"no runs under {exp_dir / 'runs'} (runs/<config>/seed<k>/summary.json)")
    return pd.DataFrame(rows)


def bench_seconds(runs: pd.DataFrame, reports: Mapping | str | Path | Sequence) -> pd.DataFrame:
    """`runs` with `step_ms` and `gpu_s` added: each run's seconds in training steps priced at the
    step time that `reports` (one or several `python -m nlcore bench` reports over `STEM:LABEL`
    configurations, made on one kind of GPU) measured for its configuration, one configuration at a
    time: steps × median step time. Unlike a run's own `train_s`, it does not depend on which GPU
    trained the run or what shared it. A budget of 07_scaling changes the number of steps, not a
    step, so any budget of the same model prices it; a run no report prices gets NaN."""
    many = reports if isinstance(reports, Sequence) and not isinstance(reports, str) else [reports]
    reps = [read_json(r) if isinstance(r, (str, Path)) else r for r in many]
    names = sorted({r.get("device_name", "GPU") for r in reps})
    if len(names) > 1:
        raise ValueError(f"bench_seconds: the reports come from different devices {names}; price on one")
    ms = {k: float(v["step_ms_median"]) for rep in reps for k, v in rep["configs"].items()}
    by_model = {}
    for key, v in ms.items():
        stem, _, label = key.partition(":")
        by_model.setdefault((stem, parse_label(label)[0]), v)

    def price(r) -> float:
        key = f"{r['experiment']}:{r['config']}"
        return ms.get(key, by_model.get((r["experiment"], r["model"]), math.nan) if r["budget"] else math.nan)

    out = runs.copy()
    out["step_ms"] = [price(r) for _, r in runs.iterrows()] if len(runs) else []
    out["gpu_s"] = out["steps"] * out["step_ms"] / 1e3
    out.attrs["bench_device"] = names[0] if names else "GPU"
    return out


def scaling_points(runs: pd.DataFrame, x: str = "chars", metric: str = "test_bpc") -> pd.DataFrame:
    """One row per configuration (experiment, config) with a finished seed: its model and budget, n
    (the finished seeds with a finite `metric`), the mean of `x` and of `metric` over those seeds with
    their 95 % t intervals (x_low, x_high, low, high; NaN for one seed), in the runs' order."""
    rows = []
    done = runs[(runs["status"] == "finished") & np.isfinite(runs[metric].astype(float))]
    for (exp, config), g in done.groupby(["experiment", "config"], sort=False):
        xm, xlo, xhi = mean_ci(g[x].to_numpy(dtype=np.float64))
        ym, ylo, yhi = mean_ci(g[metric].to_numpy(dtype=np.float64))
        rows.append({"experiment": exp, "config": config, "model": g["model"].iloc[0], "budget": g["budget"].iloc[0],
                     "n": len(g), "x": xm,
                     "x_low": xlo, "x_high": xhi, "mean": ym, "low": ylo, "high": yhi})
    cols = ["experiment", "config", "model", "budget", "n", "x", "x_low", "x_high", "mean", "low", "high"]
    return pd.DataFrame(rows, columns=cols)


def _models(runs: pd.DataFrame, models: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(runs["model"]))
    return [m for m in models if m in present] if models is not None else present


def _n_label(name: str, ns) -> str:
    """`hope (n=3)`, `hope (n=2–3)`, or `hope (n=1, no interval)`."""
    lo, hi = int(min(ns)), int(max(ns))
    n = f"n={lo}" if lo == hi else f"n={lo}–{hi}"
    return f"{name} ({n}{', no interval' if hi == 1 else ''})"


def _errorbars(ax, p: pd.DataFrame, color: str, xerr: bool = False) -> None:
    """The 95 % t whiskers of the points in `p` that have one (vertical; horizontal with `xerr`)."""
    has = np.isfinite(p["low"]) & np.isfinite(p["high"])
    if has.any():
        q = p[has]
        ax.errorbar(q["x"], q["mean"], yerr=[q["mean"] - q["low"], q["high"] - q["mean"]], fmt="none",
                    ecolor=color, capsize=3, lw=1.2)
    has_x = np.isfinite(p["x_low"]) & np.isfinite(p["x_high"]) & (p["x_high"] > p["x_low"])
    if xerr and has_x.any():
        q = p[has_x]
        ax.errorbar(q["x"], q["mean"], xerr=[q["x"] - q["x_low"], q["x_high"] - q["x"]], fmt="none",
                    ecolor=color, capsize=3, lw=1.2)


def _fit_axis(ax, pts: pd.DataFrame, axis: str = "y") -> None:
    """Limit the bpc axis to the means and to the whisker ends near them: a whisker longer than
    the means' whole spread (a seed that collapsed, a single bad seed among three) would flatten
    every other curve. A cut whisker is named, with its interval, in a note under the axes."""
    if pts.empty or not np.isfinite(pts["mean"]).any():
        return
    m0, m1 = float(np.nanmin(pts["mean"])), float(np.nanmax(pts["mean"]))
    span = max(m1 - m0, 0.1)
    reach_lo, reach_hi = max(m0 - span, 0.0), m1 + span  # whisker ends beyond these are cut
    lows, highs = pts["low"].to_numpy(dtype=np.float64), pts["high"].to_numpy(dtype=np.float64)
    lo = min([m0, *[v for v in lows if np.isfinite(v) and v >= reach_lo]])
    hi = max([m1, *[v for v in highs if np.isfinite(v) and v <= reach_hi]])
    pad = 0.06 * (hi - lo if hi > lo else span)
    (ax.set_ylim if axis == "y" else ax.set_xlim)(lo - pad, hi + pad)
    cut = pts[(np.isfinite(pts["low"]) & (pts["low"] < reach_lo)) | (np.isfinite(pts["high"]) & (pts["high"] > reach_hi))]
    if len(cut):
        named = "; ".join(f"{r.config} [{r.low:.2f}, {r.high:.2f}] (n={r.n})" for r in cut.itertuples())
        ax.annotate(f"whiskers cut at the axis: {named}", xy=(0, 0), xycoords="axes fraction", xytext=(0, -42),
                    textcoords="offset points", fontsize=8, color=GREY, va="top")


def si(n: float) -> str:
    """A count for a tick label: 8192000 -> `8.2 M`, 131072000 -> `131 M`, 5120 -> `5.1 k`."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.2g} {unit}" if v < 10 else f"{v:.0f} {unit}"
    return f"{n:g}"


def _plain_log_ticks(axis, subs=(1.0, 2.0, 5.0), fmt=lambda v: f"{v:g}") -> None:
    """Ticks of a log axis at 1, 2, 5 times the powers of ten, written as plain numbers."""
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    axis.set_minor_formatter(NullFormatter())


def _legend(ax) -> None:
    """The legend right of the axes, the models first and the marks (chosen, references) after."""
    handles, labels = ax.get_legend_handles_labels()
    marks = ("chosen", "no bpc", "entropy rate", "training window")
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith(marks))
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=9, loc="upper left",
              bbox_to_anchor=(1.0, 1.0))


def _entropy_line(ax, runs: pd.DataFrame) -> None:
    """The corpus' entropy rate (the optimum), where every run's corpus knows the same one."""
    rates = runs["entropy_rate"].dropna().unique()
    if len(rates) == 1 and runs["entropy_rate"].notna().all():
        ax.axhline(float(rates[0]), color=GREY, ls="--", lw=1.0, label=f"entropy rate, the optimum ({rates[0]:.3f})")


def sweep_curves(runs: pd.DataFrame, chosen: Mapping[str, float], models: Sequence[str] | None = None,
                 metric: str = "valid_bpc") -> Figure:
    """`metric` against the fast level's learning rate (log x), one line per model, mean over seeds
    with 95 % t whiskers; the rate `chosen` for each model (`nlcore.experiments.scaling.best_lrs`)
    ringed; a rate whose runs all ended without a bpc (diverged, stopped) is an x at the top."""
    fig, (ax,) = new_figure(7.8, 4.6)
    pts = scaling_points(runs, "lr", metric)
    marked = failed_marked = False
    for m in _models(runs, models):
        p = pts[pts["model"] == m].sort_values("x")
        c, mk = model_color(m), MARKERS.get(m, "o")
        if len(p):
            ax.plot(p["x"], p["mean"], marker=mk, color=c, ms=5, label=_n_label(m, p["n"]))
            _errorbars(ax, p, c)
        if m in chosen and (p["x"] == chosen[m]).any():
            y = float(p.loc[p["x"] == chosen[m], "mean"].iloc[0])
            ax.plot([chosen[m]], [y], ls="none", marker="o", ms=15, mfc="none", mec=c, mew=2,
                    label=None if marked else "chosen: lowest mean")
            marked = True
        lost = runs[(runs["model"] == m) & ~runs["config"].isin(p["config"])]
        if len(lost):
            ax.plot(sorted(lost["lr"].unique()), [0.97] * lost["lr"].nunique(), ls="none", marker="x", ms=8, mew=2,
                    color=c, transform=ax.get_xaxis_transform(), label=None if failed_marked else "no bpc (diverged or stopped)")
            failed_marked = True
    _entropy_line(ax, runs)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel(X_LABELS["lr"])
    ax.set_ylabel(metric_label(metric))
    _legend(ax)
    return fig


def scaling_curves(runs: pd.DataFrame, x: str = "chars", metric: str = "test_bpc",
                   models: Sequence[str] | None = None) -> Figure:
    """`metric` against `x` (log scale), one line per model through its configurations, mean over
    seeds with 95 % t whiskers. `x`: "chars" (the budgets), "params" (the widths) or "train_s"
    (seconds in training steps: a run's own time, so the points also carry a horizontal
    interval over seeds) or "gpu_s" (the same priced at one GPU's step times, `bench_seconds`).
    The corpus' entropy rate is drawn where it is known."""
    fig, (ax,) = new_figure(7.8, 4.6)
    pts = scaling_points(runs, x, metric)
    for m in _models(runs, models):
        p = pts[pts["model"] == m].sort_values("x")
        if p.empty:
            continue
        c = model_color(m)
        ax.plot(p["x"], p["mean"], marker=MARKERS.get(m, "o"), color=c, ms=6, label=_n_label(m, p["n"]))
        _errorbars(ax, p, c, xerr=(x in ("train_s", "gpu_s")))
    _fit_axis(ax, pts[pts["model"].isin(_models(runs, models))])
    _entropy_line(ax, runs)
    ax.set_xscale("log")
    if x == "chars":  # the budgets: a few values shared by every model, ticked exactly
        ticks = sorted(pts["x"].unique())
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([si(t) for t in ticks])
        ax.set_xlim(ticks[0] / 1.6, ticks[-1] * 1.6)
    else:
        _plain_log_ticks(ax.xaxis, fmt=si if x == "params" else (lambda v: f"{v:g}"))
    devices = ", ".join(dict.fromkeys(runs.loc[runs["status"] == "finished", "device"]))
    if x == "gpu_s":
        ax.set_xlabel(f"seconds in training steps at the step times of one {runs.attrs.get('bench_device', 'GPU')}"
                      " (log scale)")
    else:
        ax.set_xlabel(X_LABELS.get(x, f"seconds in training steps on {devices} (log scale)"))
    ax.set_ylabel(metric_label(metric))
    _legend(ax)
    return fig


def ranking_panels(panels: Mapping[str, pd.DataFrame], metric: str = "test_bpc") -> Figure:
    """One panel per corpus (title -> its runs), each ranking the models by mean `metric`, best on
    top, with 95 % t whiskers; each row reads `rank. model (n=k)`. Each panel has its own x axis:
    bpc on two corpora are not on one scale, their orders are what compares."""
    rows = max(2, max(r["model"].nunique() for r in panels.values()))
    fig, axes = new_figure(5.6 * len(panels), 1.6 + 0.45 * rows, ncols=len(panels))
    for ax, (title, runs) in zip(axes, panels.items()):
        p = scaling_points(runs, "chars", metric).sort_values("mean", kind="stable").reset_index(drop=True)
        for y, r in p.iterrows():
            c = model_color(r["model"])
            if math.isfinite(r["low"]) and math.isfinite(r["high"]):
                ax.errorbar(r["mean"], y, xerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]], fmt="none",
                            ecolor=c, capsize=3)
            ax.plot(r["mean"], y, marker=MARKERS.get(r["model"], "o"), color=c, ms=7, ls="none")
        _fit_axis(ax, p, axis="x")
        ax.set_yticks(range(len(p)), [f"{i + 1}. " + _n_label(m, [n]) for i, (m, n) in enumerate(zip(p["model"], p["n"]))])
        ax.set_ylim(len(p) - 0.5, -0.5)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(metric_label(metric))
        ax.set_title(title, fontsize=11)
    return fig


def compute_matched(runs: pd.DataFrame, reference: str = "hope", metric: str = "test_bpc",
                    seconds: str = "train_s") -> pd.DataFrame:
    """At every configuration of the `reference` model, what each other model reaches in no more
    time: the configuration of that model with the lowest mean `metric` among those whose mean
    seconds in training steps (the column `seconds`: `train_s`, or `gpu_s` of `bench_seconds`)
    are at most the reference's (none: the model's smallest budget takes longer). Columns:
    reference, reference_s, reference_bpc, model, config, chars, seconds, bpc, minus_reference
    (bpc − reference_bpc; negative: lower in the same time)."""
    pts = scaling_points(runs, seconds, metric)
    chars = runs.groupby("config")["chars"].first()
    rows = []
    for _, ref in pts[pts["model"] == reference].sort_values("x").iterrows():
        for m in _models(runs, None):
            if m == reference:
                continue
            fit = pts[(pts["model"] == m) & (pts["x"] <= ref["x"])]
            best = fit.loc[fit["mean"].idxmin()] if len(fit) else None
            rows.append({"reference": ref["config"], "reference_s": ref["x"], "reference_bpc": ref["mean"], "model": m,
                         "config": None if best is None else best["config"],
                         "chars": math.nan if best is None else chars[best["config"]],
                         "seconds": math.nan if best is None else best["x"],
                         "bpc": math.nan if best is None else best["mean"],
                         "minus_reference": math.nan if best is None else best["mean"] - ref["mean"]})
    cols = ["reference", "reference_s", "reference_bpc", "model", "config", "chars", "seconds", "bpc", "minus_reference"]
    return pd.DataFrame(rows, columns=cols)


def context_curves(context: pd.DataFrame, configs: Sequence[str], window: int | None = None,
                   scale_from: int = 64) -> Figure:
    """Held-out bpc against the characters read since the article start, per configuration: mean
    over seeds of each log-spaced bin [p, 2p) (plotted at p) with a 95 % t band (left out, and the
    legend says so, where it is over three times as wide as the spread of all the means: a seed that
    failed). Below, the
    predictions each bin holds (the far bins rest on the longest articles only). `window`: the
    training window T, drawn as a vertical line (a Transformer sees no further back). The bpc axis
    spans the bins from `scale_from` characters on: an article's first characters (its title, read
    from the zero state) cost several times more and would flatten the rest; the title says how much."""
    fig = Figure(figsize=(8.4, 5.6), layout="constrained")
    ax, bx = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    curves = {}  # config -> (bins, (bins, 3) mean and band, seeds)
    for config in configs:
        c = context[context["config"] == config]
        if not c.empty:
            table = c.pivot(index="bin_lo", columns="seed", values="bpc").sort_index()  # (bins, seeds)
            stats = np.array([mean_ci(row) for row in table.to_numpy(dtype=np.float64)])  # (bins, 3)
            curves[config] = (table.index.to_numpy(dtype=np.float64), stats, table.shape[1])
    means = np.concatenate([st[x >= scale_from, 0] for x, st, _ in curves.values()] or [np.zeros(0)])
    span = max(float(np.nanmax(means) - np.nanmin(means)), 0.25) if np.isfinite(means).any() else math.inf
    shown, early = [means], []
    for config, (x, stats, seeds) in curves.items():
        model, far = parse_label(config)[0], stats[x >= scale_from]
        wide = bool(np.nanmax(far[:, 2] - far[:, 1], initial=0.0) > 3 * span)  # a band that would flatten the rest
        ax.plot(x, stats[:, 0], color=model_color(model), marker=MARKERS.get(model, "o"), ms=4,
                label=_n_label(config, [seeds])[:-1] + ("; band too wide: not drawn)" if wide else ")"))
        if not wide:
            ax.fill_between(x, stats[:, 1], stats[:, 2], color=model_color(model), alpha=0.2, linewidth=0)
            shown.append(far[:, 1:].ravel())
        early.append(stats[x < scale_from, 0])
    shown = np.concatenate(shown)
    if np.isfinite(shown).any():
        lo, hi = np.nanmin(shown), np.nanmax(shown)
        ax.set_ylim(lo - 0.08 * (hi - lo), hi + 0.08 * (hi - lo))
        off = np.concatenate(early) if early else np.zeros(0)
        if (off > hi).any():
            ax.set_title(f"the bins before {scale_from} characters reach up to {np.nanmax(off):.1f} bpc "
                         f"(above the axis)", fontsize=9, color=GREY)
    counts = context[context["config"].isin(configs)].groupby("bin_lo")["count"].first().sort_index()
    bx.plot(counts.index, counts.to_numpy(), "o-", color=GREY, ms=4)
    for a in (ax, bx):
        if window is not None:
            a.axvline(window, color=PALETTE["black"], lw=0.9, ls=":",
                      label=f"training window T = {window}" if a is ax else None)
    ax.set_xscale("log", base=2)
    bx.set_yscale("log")
    _plain_log_ticks(bx.yaxis, fmt=si)
    ax.set_ylabel("test bits per character")
    bx.set_ylabel("predictions")
    bx.set_xlabel("characters read since the article start (bin [p, 2p) at p, log scale)")
    _legend(ax)
    return fig


def context_gain(context: pd.DataFrame, start: int, min_share: float = 0.02) -> pd.DataFrame:
    """How much the loss still falls beyond `start` characters of context: per configuration and
    seed, the bpc of the bin holding `start` minus the bpc of the farthest bin that holds at least
    `min_share` of the predictions; mean and 95 % t interval over seeds (positive: lower bpc with
    more context). Columns: config, from_bin, to_bin, n, mean, ci_low, ci_high."""
    rows = []
    for config, c in context.groupby("config", sort=False):
        counts = c.groupby("bin_lo")["count"].first().sort_index()
        lo = counts.index[counts.index <= start]
        far = counts.index[counts >= min_share * counts.sum()]
        if not len(lo) or not len(far) or far.max() <= lo.max():
            continue
        a, b = lo.max(), far.max()
        by_seed = c.pivot(index="seed", columns="bin_lo", values="bpc").astype(float)
        drop = (by_seed[a] - by_seed[b]).to_numpy(dtype=np.float64)  # (seeds,)
        mean, ci_low, ci_high = mean_ci(drop)
        rows.append({"config": config, "from_bin": int(a), "to_bin": int(b), "n": int(np.isfinite(drop).sum()), "mean": mean,
                     "ci_low": ci_low, "ci_high": ci_high})
    return pd.DataFrame(rows, columns=["config", "from_bin", "to_bin", "n", "mean", "ci_low", "ci_high"])
