"""Results across seeds: ranked 95 % CI bars, paired differences against a baseline, one pair seed by
seed, the summary table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure

from nlcore.report.figures.common import GREY, metric_label
from nlcore.report.plotting import PALETTE


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
        ax.axvline(reference, color=GREY, linestyle="--", linewidth=1.2, label=f"{reference_label} ({reference:.3f})")
    else:  # a line that far away would squash the differences that matter
        side = "right" if reference > hi_all else "left"
        ax.plot([], [], " ", label=f"{reference_label}: {reference:.3f} (off the axis, {side})")
    ax.legend(loc="best", fontsize=9)


def ci_bars(summary_records: Iterable[Mapping], metric: str = "valid_bpc", order: Sequence[str] | None = None,
            *, lower_is_better: bool = True, reference: float | None = None, reference_label: str = "reference",
            group_prefix: tuple[str, str] | None = None, title: str | None = None) -> Figure:
    """Mean and 95 % t interval across seeds per configuration, ranked best first (or in
    `order`); n in the title (or per row when it differs). `reference` draws a vertical line
    (e.g. the unigram level) where it fits the axis, else names it. `group_prefix=(prefix, name)`
    puts configurations whose label starts with `prefix` in a second panel with its own axis,
    so neither group's differences are squashed by the distance between the groups. `title`
    (the finding) goes above the default description of the intervals."""
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
    what = f"{metric_label(metric).capitalize()}: mean and 95 % t interval ({n_text})"
    fig.suptitle(what if title is None else f"{title}\n{what}", fontsize=11)
    return fig


def ci_panels(summary_records: Iterable[Mapping], metric: str,
              panels: Sequence[tuple[str, str, float | None, str]], *, lower_is_better: bool = True,
              title: str | None = None) -> Figure:
    """Like `ci_bars`, one panel per label prefix with its own axis and reference line:
    `panels` = [(prefix, title, reference or None, reference_label), ...]; rows ranked best
    first inside each panel; a prefix without records is skipped; `title` states the finding."""
    recs = _records(summary_records, metric)
    groups = []
    for prefix, name, ref, ref_label in panels:
        ls = sorted((c for c in recs if c.startswith(prefix)),
                    key=lambda c: (recs[c]["mean"] is None, (recs[c]["mean"] or 0) * (1 if lower_is_better else -1)))
        if ls:
            groups.append((name, ls, ref, ref_label))
    if not groups:
        raise ValueError(f"ci_panels: no records for metric {metric!r} with prefixes {[p[0] for p in panels]}")
    n_rows = sum(len(g[1]) for g in groups)
    ns = {int(recs[c]["n_seeds"]) for g in groups for c in g[1]}
    fig = Figure(figsize=(7.4, 1.2 + 0.4 * n_rows + 0.7 * (len(groups) - 1)), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False, gridspec_kw={"height_ratios": [len(g[1]) for g in groups]})[:, 0]
    colors = (PALETTE["blue"], PALETTE["orange"], PALETTE["bluish_green"])
    for i, (ax, (name, ls, ref, ref_label)) in enumerate(zip(axes, groups)):
        _ci_panel(ax, recs, ls, colors[i % 3], len(ns) > 1, ref, ref_label)
        ax.set_title(name, fontsize=10, loc="left", color=colors[i % 3])
        ax.set_xlabel(metric_label(metric), fontsize=9)
    n_text = f"n = {ns.pop()} seed(s) each" if len(ns) == 1 else "n per row"
    better = "lower" if lower_is_better else "higher"
    what = f"{metric_label(metric).capitalize()} ({better} is better): mean and 95 % t interval ({n_text})"
    fig.suptitle(what if title is None else f"{title}\n{what}", fontsize=11)
    return fig


def paired_diff_bars(diffs: pd.DataFrame, metric: str = "valid_bpc", *, strip: str = "",
                     title: str | None = None) -> Figure:
    """Paired differences config − baseline (same seeds) with their 95 % t intervals, one panel
    per baseline, best (most negative) on top. The grey band (named in the panel title) is ± the half-width of the
    baseline's own (unpaired) 95 % CI: a difference inside it is smaller than the spread of
    the seeds. `diffs` as `nlcore.report.notebook.paired_differences` returns it; `strip` is removed
    from the row labels' start; `title` (the finding) replaces the first line of the title."""
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
        band = math.isfinite(half) and half > 0
        if band:
            ax.axvspan(-half, half, color=GREY, alpha=0.18, linewidth=0)
        ax.axvline(0.0, color=GREY, linewidth=1.0)
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
        ax.set_title(f"minus {base}, seed by seed" + (f"; grey: ± half-width of {base}'s own 95 % CI ({half:.4f})"
                                                      if band else ""), fontsize=9, loc="left")
        ax.set_xlabel(f"Δ {metric_label(metric)} (negative: better than {base})", fontsize=9)
    head = title or "Paired differences against the baseline: mean and 95 % t interval over seeds"
    fig.suptitle(f"{head}\n(green: CI below 0, red: above 0, blue: contains 0)", fontsize=11)
    return fig


def paired_seeds(runs: pd.DataFrame, config: str, baseline: str, metric: str = "valid_bpc",
                 title: str | None = None) -> Figure:
    """One configuration against its baseline, seed by seed (same seed, same data order).

    Left: each seed's `metric` under the baseline and under `config`, joined by a line (the
    seeds' own spread is what an unpaired comparison has to beat). Right: the per-seed
    differences config − baseline with their mean and 95 % t interval (`nlcore.stats.paired_diff_ci`).
    `runs` is a tidy runs.csv frame (config, seed, metric, value)."""
    from matplotlib.ticker import MaxNLocator

    from nlcore import stats

    m = runs[runs["metric"] == metric]
    a, b = (m[m["config"] == c].set_index("seed")["value"].astype(float) for c in (config, baseline))
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        raise ValueError(f"paired_seeds: no seed ran both {config!r} and {baseline!r} ({metric})")
    a, b = a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy()  # (n,), same seed order
    mean, lo, hi = stats.paired_diff_ci(a, b)
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    ax, dx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1.0]})
    markers = "os^vDP*X"
    for i, (seed, va, vb) in enumerate(zip(seeds, a, b)):
        color = PALETTE["bluish_green"] if va < vb else PALETTE["vermillion"]
        ax.plot([0, 1], [vb, va], "-", marker=markers[i % len(markers)], color=color, ms=6, label=f"seed {seed}")
        dx.plot(va - vb, i, markers[i % len(markers)], color=color, ms=7)
    ax.set_xticks([0, 1], [baseline, config])
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylabel(metric_label(metric))
    ax.set_title("each seed under both settings (green: lower)", fontsize=10, loc="left")
    ax.legend(fontsize=8, loc="best")
    n = len(seeds)
    if math.isfinite(lo) and math.isfinite(hi):
        dx.errorbar(mean, n, xerr=[[mean - lo], [hi - mean]], fmt="D", color=PALETTE["blue"], capsize=4, ms=6)
    else:
        dx.plot(mean, n, "D", color=PALETTE["blue"], ms=6)
    dx.axvline(0.0, color=GREY, linewidth=1.0)
    dx.set_yticks(range(n + 1), [f"seed {seed}" for seed in seeds] + [f"mean, 95 % t (n = {n})"])
    dx.set_ylim(n + 0.6, -0.6)
    dx.grid(axis="y", visible=False)
    dx.xaxis.set_major_locator(MaxNLocator(nbins=5))
    dx.set_xlabel(f"Δ {metric_label(metric)} ({config} − {baseline})", fontsize=9)
    dx.set_title("the differences, seed by seed", fontsize=10, loc="left")
    lower = int((a < b).sum())
    verdict = "its t interval clears zero" if (hi < 0 or lo > 0) else "its t interval contains zero: not separated"
    fig.suptitle(title or f"{config} is lower than {baseline} on {lower} of {len(seeds)} seeds; {verdict}", fontsize=11)
    return fig


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
