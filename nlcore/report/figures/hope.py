"""Tables and figures of notebook 06 (HOPE and Titans against an LSTM and a Transformer).

Everything is read from result files, never from numbers typed in:
- `results/06_hope_titans/runs/<config>/seed<k>/summary.json` (held-out bpc, bpc by position,
  params, chars/s); a run folder without `summary.json` is a run that did not finish, and its
  `train.log` says whether it diverged (`NonFiniteError`);
- `results/bench/models_06.json` (`nlcore.bench.step` step-time report) and
  `results/bench/memory_paths.json` (token-by-token vs chunked memory, `nlcore.bench.memory_paths`);
- `results/06_mqar/<model>/runs/<config>/L<T>/seed<k>/summary.json` (MQAR recall accuracy).
Every function takes its folder or report as an argument and defaults to the committed one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nlcore import paths
from nlcore.report.figures.common import new_figure
from nlcore.report.plotting import PALETTE

STEM, MQAR_STEM = "06_hope_titans", "06_mqar"
ORDER = ("nested_lstm", "transformer", "titans", "titans_norm", "titans_cap", "titans_linear", "titans_alpha0.999",
         "hope", "hope_layer_teach", "hope_outer", "hope_outer_adamw", "hope_outer_no_momentum", "hope_static")
GREY = "#7f7f7f"
COLORS = {"nested_lstm": PALETTE["blue"], "transformer": PALETTE["orange"], "titans": PALETTE["vermillion"],
          "titans_norm": PALETTE["vermillion"], "titans_cap": PALETTE["vermillion"],
          "titans_linear": PALETTE["reddish_purple"], "titans_alpha0.999": PALETTE["yellow"],
          "hope": PALETTE["bluish_green"], "hope_outer": PALETTE["sky_blue"], "hope_static": PALETTE["black"],
          "hope_outer_adamw": GREY, "hope_outer_no_momentum": PALETTE["sky_blue"]}


def color(config: str) -> str:
    """The colour of a configuration (bench variants `<config>_eager`, `<config>_b64` share their model's)."""
    base = re.sub(r"_b\d+$", "", config.removesuffix("_eager"))
    return COLORS.get(base, COLORS.get(base.split("_")[0], GREY))


def _read(path: Path) -> dict:
    from nlcore.results import read_json

    return read_json(path)


def _ordered(names) -> list[str]:
    names = list(dict.fromkeys(names))
    return [c for c in ORDER if c in names] + sorted(c for c in names if c not in ORDER)


# ---------------------------------------------------------------------------- held-out bpc


def _finished(run_dir: Path) -> dict | None:
    """A run's summary.json when it finished training (a diverged run's summary has no bpc)."""
    summary = _read(run_dir / "summary.json") if (run_dir / "summary.json").exists() else None
    return summary if summary is not None and summary.get("status") != "diverged" else None


def runs(out_dir: str | Path | None = None) -> dict[str, dict[int, dict | None]]:
    """config -> seed -> that run's summary.json (None: the run has no summary or diverged)."""
    root = Path(out_dir or paths.results_root("full") / STEM) / "runs"
    found: dict[str, dict[int, dict | None]] = {}
    for cfg in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        seeds = sorted((p for p in cfg.glob("seed*") if p.is_dir()), key=lambda p: int(p.name[4:]))
        found[cfg.name] = {int(s.name[4:]): _finished(s) for s in seeds}
    return {c: found[c] for c in _ordered(found)}


def run_status(run_dir: Path) -> str:
    """A run that did not finish: "diverged" (its summary says so, or its train.log), "failed",
    "unfinished" or "missing"."""
    if (run_dir / "summary.json").exists() and _read(run_dir / "summary.json").get("status") == "diverged":
        return "diverged"
    log = run_dir / "train.log"
    if not log.exists():
        return "missing"
    text = log.read_text(errors="replace")
    if "NonFiniteError" in text or "non-finite" in text:
        return "diverged"
    return "failed" if "Traceback" in text else "unfinished"


def bpc_table(out_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per configuration (registry order): seeds run and finished, valid bpc mean and
    95 % t interval, test bpc mean, params, chars/s, and a status: "ok", or for a
    configuration with no finished seed "diverged" / "failed" / "unfinished" (from its train.log)
    or "missing" (named in meta.json, no run folder or no log)."""
    from nlcore.stats import t_ci

    out_dir = Path(out_dir or paths.results_root("full") / STEM)
    found = runs(out_dir)
    named = list(_read(out_dir / "meta.json").get("configs") or []) if (out_dir / "meta.json").exists() else []
    rows = []
    for config in _ordered([*found, *named]):
        seeds = found.get(config, {})
        done = {s: r for s, r in seeds.items() if r is not None}
        row = {"config": config, "n_run": len(seeds), "n": len(done)}
        if done:
            mean, lo, hi = t_ci([r["valid_bpc"] for r in done.values()])
            row.update(valid_bpc=mean, ci_low=lo, ci_high=hi,
                       test_bpc=float(np.mean([r["test_bpc"] for r in done.values()])),
                       params=int(next(iter(done.values()))["params"]),
                       chars_per_s=float(np.mean([r["chars_per_s"] for r in done.values()])), status="ok")
        else:
            states = {run_status(out_dir / "runs" / config / f"seed{s}") for s in seeds} or {"missing"}
            row["status"] = "diverged" if "diverged" in states else sorted(states)[0]
        rows.append(row)
    cols = ["config", "n_run", "n", "valid_bpc", "ci_low", "ci_high", "test_bpc", "params", "chars_per_s", "status"]
    return pd.DataFrame(rows, columns=cols).astype({"n_run": int, "n": int, "params": "Int64"})


def plot_bpc(out_dir: str | Path | None = None, zoom: float | None = 0.5, reference: float | None = None) -> Figure:
    """Validation bpc per configuration (best on top): one dot per seed, the mean with its 95 %
    t interval; configurations without a finished seed are named under the axis.

    `zoom` (bpc): the axis ends `zoom` above the best mean, so the models that learned are not
    squeezed together; a seed or mean beyond it is written at the right edge with its value
    (an arrow: off-scale). None shows every value. `reference` (e.g. the unigram bpc) is drawn
    dashed, or named in the axis label when it is off-scale."""
    table = bpc_table(out_dir)
    ok = table[table["n"] > 0].sort_values("valid_bpc").reset_index(drop=True)
    found = runs(out_dir)
    fig = Figure(figsize=(7.4, 1.4 + 0.45 * max(len(ok), 1)), layout="constrained")
    ax = fig.add_subplot()
    seeds = {c: [s["valid_bpc"] for s in found[c].values() if s is not None] for c in ok["config"]}
    edge = ok["valid_bpc"].min() + zoom if zoom is not None and len(ok) else math.inf
    low = min((v for vs in seeds.values() for v in vs), default=0.0)
    for y, r in ok.iterrows():
        vals, c = seeds[r["config"]], color(r["config"])
        inside = [v for v in vals if v <= edge]
        ax.plot(inside, [y] * len(inside), "o", color=c, alpha=0.45, markersize=5)
        lo, hi = r["ci_low"], r["ci_high"]
        if r["valid_bpc"] <= edge:
            err = [[r["valid_bpc"] - lo], [min(hi, edge) - r["valid_bpc"]]] if math.isfinite(lo) and math.isfinite(hi) else None
            ax.errorbar(r["valid_bpc"], y, xerr=err, fmt="D", color=c, capsize=4, markersize=7)
        off = [v for v in vals if v > edge]
        if off:
            if len(vals) == 1:
                what = f"its one seed at {off[0]:.2f} bpc"
            elif len(off) == len(vals) and max(off) - min(off) < 0.005:
                what = f"all {len(off)} seeds at {r['valid_bpc']:.2f} bpc"
            else:
                what = (f"mean {r['valid_bpc']:.2f}; " if r["valid_bpc"] > edge else "") + \
                       ("seeds at " if len(off) > 1 else "a seed at ") + ", ".join(f"{v:.2f}" for v in sorted(off)) + " bpc"
            ax.annotate(f"{what}: off-scale", xy=(edge, y), xytext=(-10, 0), textcoords="offset points",
                        ha="right", va="center", fontsize=8.5, color=c,
                        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.9})
            ax.plot([edge], [y], ">", color=c, markersize=8, clip_on=False)
    ax.set_yticks(range(len(ok)), [f"{c} (n={n})" if n == r else f"{c} (n={n} of {r} run)"  # a seed lost: say so
                                   for c, n, r in zip(ok["config"], ok["n"], ok["n_run"])])
    ax.set_ylim(len(ok) - 0.5, -0.5)
    if math.isfinite(edge):
        ax.set_xlim(low - 0.03, edge)
    ax.grid(axis="y", visible=False)
    failed = table[table["n"] == 0]
    notes = [f"{c}: {s} ({n} run{'s' if n != 1 else ''})" for c, s, n in
             zip(failed["config"], failed["status"], failed["n_run"])]
    if reference is not None and reference <= edge:
        ax.axvline(reference, color=GREY, linestyle="--", linewidth=1.2)
    elif reference is not None:
        notes.append(f"unigram model {reference:.2f} bpc (off-scale)")
    ax.set_xlabel("validation bits per character (lower is better)" + ("\nnot shown: " + "; ".join(notes) if notes else ""))
    best = ok.iloc[0] if len(ok) else None
    title = "Held-out bpc per model" if best is None else \
        f"{best['config']} predicts held-out text best ({best['valid_bpc']:.3f} bpc, n={best['n']})"
    ax.set_title(title + "\nseeds (dots), mean and 95 % t interval (diamond)", fontsize=11, loc="left")
    return fig


def position_bins(length: int, n_bins: int = 40) -> list[np.ndarray]:
    """0-based position indices of `length` grouped into about `n_bins` log-spaced bins (the
    first positions alone, then wider and wider), so a log-x curve averages its noisy tail."""
    edges = np.unique(np.geomspace(1, length + 1, n_bins + 1).astype(int))  # 1-based, increasing
    return [np.arange(a - 1, b - 1) for a, b in zip(edges[:-1], edges[1:])]


def plot_bpc_by_position(out_dir: str | Path | None = None, configs: Sequence[str] | None = None,
                         n_bins: int = 40, title: str | None = None) -> Figure:
    """Validation bpc against the position in the window (log x; positions averaged in
    `position_bins`), mean over the finished seeds with the min–max band over seeds; configurations
    without a finished seed (or not in `configs`) are skipped."""
    found = runs(out_dir)
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for config in [c for c in (configs or found) if c in found]:
        curves = [s["valid_bpc_by_position"] for s in found[config].values() if s and s.get("valid_bpc_by_position")]
        if not curves:
            continue
        per_pos = np.asarray(curves, dtype=np.float64)  # (seeds, T)
        bins = position_bins(per_pos.shape[1], n_bins)
        arr = np.stack([per_pos[:, b].mean(1) for b in bins], axis=1)  # (seeds, bins)
        x = np.array([np.exp(np.log(b + 1).mean()) for b in bins])  # geometric centre, 1-based
        (line,) = ax.plot(x, arr.mean(0), color=color(config), label=f"{config} (n={len(arr)})")
        if len(arr) > 1:
            ax.fill_between(x, arr.min(0), arr.max(0), color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel("position inside the window (characters of context)")
    ax.set_ylabel("validation bits per character")
    ax.set_title(title or "Does loss keep falling with context? (mean over seeds, band min–max)", fontsize=11, loc="left")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


# ---------------------------------------------------------------------------- speed (GPU reports)


def throughput_table(report: Mapping | None = None) -> pd.DataFrame:
    """Per configuration of a `nlcore.bench.step` report: chars/s, median step time, params, and the
    step time relative to the report's baseline (`ratio_to_baseline`)."""
    from nlcore.report.figures.bench import bench_report as load_report

    report = report or load_report("models_06")
    rows = [{"config": name, "chars_per_s": c["chars_per_s"], "step_ms": c["step_ms_median"],
             "params": c.get("params"), "ratio_to_baseline": c.get("ratio_to_baseline"),
             "cuda_graph": c.get("cuda_graph", c.get("fast_path")), "batch_size": c.get("batch_size"), "seq_len": c.get("seq_len")}
            for name, c in report["configs"].items()]
    return pd.DataFrame(rows)


def step_ratios(name: str = "models_06") -> dict[str, float]:
    """{configuration: median step time / the baseline's} of the committed `nlcore bench` report
    `results/bench/<name>.json`; empty while it is not committed."""
    from nlcore.report.figures.bench import bench_report

    try:
        report = bench_report(name)
    except FileNotFoundError:
        return {}
    return {k: c["ratio_to_baseline"] for k, c in report["configs"].items() if c.get("ratio_to_baseline")}


def flops_table(flops: Mapping, bench: Mapping, baseline: str | None = None) -> pd.DataFrame:
    """Per configuration in both reports: GFLOP per training step (a FLOP-count report, each config
    with its `step_gflop`), median step time (a `nlcore bench` report), each as a multiple of the
    baseline's (default: the bench's), and the rate they imply (TFLOP/s)."""
    base = baseline or bench.get("settings", {}).get("baseline")
    both = [c for c in flops["configs"] if c in bench["configs"]]
    if base not in both:
        raise ValueError(f"flops_table: the baseline {base!r} must be in both reports; both hold {both}")
    t = pd.DataFrame({"config": both, "gflop": [flops["configs"][c]["step_gflop"] for c in both],
                      "step_ms": [bench["configs"][c]["step_ms_median"] for c in both]})
    ref = t.set_index("config").loc[base]
    return t.assign(flop_ratio=t["gflop"] / ref["gflop"], time_ratio=t["step_ms"] / ref["step_ms"],
                    tflop_per_s=t["gflop"] / t["step_ms"])


def plot_flops_vs_time(flops: Mapping, bench: Mapping, baseline: str | None = None) -> Figure:
    """Step time against arithmetic, both as multiples of the baseline's (log-log): on the diagonal a
    model is as efficient as the baseline, above it its step waits on something other than FLOPs."""
    t = flops_table(flops, bench, baseline)
    base = baseline or bench["settings"]["baseline"]
    fig, (ax,) = new_figure(6.6, 4.6)
    lim = (min(t["flop_ratio"].min(), t["time_ratio"].min()) / 1.4, max(t["flop_ratio"].max(), t["time_ratio"].max()) * 1.5)
    ax.plot(lim, lim, color=GREY, linestyle="--", linewidth=1.0, label=f"step time in proportion to FLOPs ({base}'s rate)")
    gap = (math.log10(lim[1]) - math.log10(lim[0])) / 14  # labels at least this far apart (log10 units)
    below = math.inf
    for r in t.sort_values("time_ratio", ascending=False).itertuples():  # top down, each label below the last
        ax.scatter(r.flop_ratio, r.time_ratio, s=60, color=color(r.config), zorder=3)
        below = min(math.log10(r.time_ratio), below - gap)
        ax.annotate(f"{r.config}  {r.tflop_per_s:.0f} TFLOP/s", (r.flop_ratio, r.time_ratio),
                    xytext=(r.flop_ratio * 1.07, 10 ** below), va="center", fontsize=8.5,
                    arrowprops={"arrowstyle": "-", "color": GREY, "linewidth": 0.6, "shrinkA": 0, "shrinkB": 4})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ticks = [v for v in (1, 2, 5, 10, 20, 50) if lim[0] <= v <= lim[1]]
    ax.set_xticks(ticks, [f"{v}×" for v in ticks])
    ax.set_yticks(ticks, [f"{v}×" for v in ticks])
    ax.minorticks_off()
    ax.set_xlabel(f"FLOPs per training step, × the {base}'s (torch's count, eager)")
    ax.set_ylabel(f"median step time, × the {base}'s")
    ax.legend(loc="upper left", fontsize=8.5)
    far = t.loc[(t["time_ratio"] / t["flop_ratio"]).idxmax()]
    ax.set_title(f"{far['config']}: {far['flop_ratio']:.2f}× the {base}'s FLOPs, {far['time_ratio']:.1f}× its step time\n"
                 f"{bench.get('device_name', bench.get('device'))}, B × T = {bench['configs'][base].get('batch_size')} × "
                 f"{bench['configs'][base].get('seq_len')}", fontsize=11, loc="left")
    return fig


def plot_throughput(report: Mapping | None = None) -> Figure:
    """Training throughput (characters/s, log scale) per configuration, each bar labelled with
    its step time relative to the baseline's (paired over the timed windows)."""
    from nlcore.report.figures.bench import bench_report as load_report

    report = report or load_report("models_06")
    t = throughput_table(report)
    base = report.get("settings", {}).get("baseline", "baseline")
    fig = Figure(figsize=(7.0, 1.2 + 0.45 * len(t)), layout="constrained")
    ax = fig.add_subplot()
    ys = np.arange(len(t))
    ax.barh(ys, t["chars_per_s"], color=[color(c) for c in t["config"]],
            hatch=["//" if c.endswith("_eager") else "" for c in t["config"]], edgecolor="white")
    for y, r in t.iterrows():
        ratio = r["ratio_to_baseline"]
        label = "baseline" if r["config"] == base else (f"{ratio:.1f}× {base}'s step time" if ratio else "")
        ax.text(r["chars_per_s"] * 1.1, y, label, va="center", fontsize=9)
    ax.set_xscale("log")
    ax.set_xlim(t["chars_per_s"].min() / 2, t["chars_per_s"].max() * 12)
    ax.set_yticks(ys, list(t["config"]))
    ax.set_ylim(len(t) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    windows = report.get("settings", {}).get("windows")
    ax.set_xlabel(f"training characters per second (log; median of n={windows} timed windows;\n"
                  "hatched: eager, without CUDA graphs)")
    b, s = t["batch_size"].iloc[0], t["seq_len"].iloc[0]
    slow = t[t["config"] != base].sort_values("ratio_to_baseline").iloc[-1]
    ax.set_title(f"A {slow['config']} step takes {slow['ratio_to_baseline']:.1f}× the {base}'s time\n"
                 f"B × T = {b} × {s}, {report.get('device_name', report.get('device'))}", fontsize=11, loc="left")
    return fig


def memory_speed_table(report: Mapping | None = None) -> pd.DataFrame:
    """Per memory of `results/bench/memory_paths.json`: window, batch, chunk, the median time of
    one forward+backward token by token and chunked, the speed-up, and the number of repeats."""
    from nlcore.report.figures.bench import bench_report as load_report

    report = report or load_report("memory_paths")
    keep = ["memory", "window", "batch", "chunk", "token_s", "chunk_s", "speedup"]
    t = pd.DataFrame([{k: r.get(k) for k in keep} for r in report["rows"]], columns=keep)
    t["repeats"] = [len(r.get("token_all_s") or []) for r in report["rows"]]
    return t


def plot_memory_speed(report: Mapping | None = None) -> Figure:
    """Token-by-token against chunked memory (forward+backward of one window, log scale): bars
    at the median, whiskers min–max over the repeats, the speed-up written above each pair."""
    from nlcore.report.figures.bench import bench_report as load_report

    report = report or load_report("memory_paths")
    t = memory_speed_table(report)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(t))
    for dx, key, col, name in ((-0.2, "token", PALETTE["vermillion"], "token by token"),
                               (0.2, "chunk", PALETTE["blue"], "chunked")):
        allv = [r.get(f"{key}_all_s") or [r[f"{key}_s"]] for r in report["rows"]]
        med = t[f"{key}_s"].to_numpy()
        err = [med - np.array([min(a) for a in allv]), np.array([max(a) for a in allv]) - med]
        ax.bar(x + dx, med, width=0.4, color=col, label=name, yerr=err, capsize=3)
    for i, r in t.iterrows():
        ax.text(i, r["token_s"] * 1.6, f"{r['speedup']:.0f}× faster", ha="center", fontsize=9)
    ax.set_yscale("log")
    ax.set_xticks(x, list(t["memory"]))
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("seconds per window (forward + backward)")
    gpu = report.get("environment", {}).get("gpu_name") or report.get("environment", {}).get("device")
    ax.set_title(f"Chunked memories run {t['speedup'].min():.0f}–{t['speedup'].max():.0f}× faster than token by "
                 f"token\n{gpu}, window {t['window'].iloc[0]}, batch {t['batch'].iloc[0]}, chunk {t['chunk'].iloc[0]}; "
                 f"\nmedian, whiskers min–max over n={t['repeats'].iloc[0]} repeats", fontsize=10, loc="left")
    ax.set_ylim(t["chunk_s"].min() / 3, t["token_s"].max() * 40)
    ax.legend(loc="upper left", ncols=2)
    return fig


# ---------------------------------------------------------------------------- MQAR


def mqar_table(root: str | Path | None = None) -> pd.DataFrame:
    """Every finished MQAR run under `root` (`results/06_mqar`): model (its folder), seq_len,
    n_pairs, seed, accuracy, chance accuracy, params, steps, diverged_at_step."""
    root = Path(root or paths.results_root("full") / MQAR_STEM)
    rows = []
    for f in sorted(root.glob("*/runs/*/L*/seed*/summary.json")):
        s = _read(f)
        rows.append({"model": f.parts[-6], "seq_len": int(s["seq_len"]), "n_pairs": int(s["n_pairs"]),
                     "seed": int(s["seed"]), "accuracy": float(s["accuracy"]),
                     "chance": float(s["chance_accuracy"]), "params": s.get("params"),
                     "steps": s.get("steps"), "diverged_at_step": s.get("diverged_at_step")})
    cols = ["model", "seq_len", "n_pairs", "seed", "accuracy", "chance", "params", "steps", "diverged_at_step"]
    t = pd.DataFrame(rows, columns=cols)
    t["_o"] = [(_ordered(t["model"]).index(m)) for m in t["model"]]
    return t.sort_values(["_o", "seq_len", "seed"]).drop(columns="_o").reset_index(drop=True)


def mqar_summary(table: pd.DataFrame | None = None, *, versus: tuple[str, str] | None = None) -> pd.DataFrame:
    """Per model and length: seeds n, mean recall accuracy and its 95 % Student-t interval
    (`nlcore.stats.t_ci`; NaN for one seed). versus = (a, b):
    instead, per length where both ran the same seeds, the paired difference a − b
    (`nlcore.stats.paired_diff_ci`)."""
    from nlcore.stats import paired_diff_ci, t_ci

    t = mqar_table() if table is None else table
    rows = []
    if versus is None:
        for (model, L), g in t.groupby(["model", "seq_len"], sort=False):
            mean, lo, hi = t_ci(g["accuracy"].to_numpy())
            rows.append({"model": model, "seq_len": L, "n": len(g), "accuracy": mean, "ci_low": lo, "ci_high": hi})
        return pd.DataFrame(rows, columns=["model", "seq_len", "n", "accuracy", "ci_low", "ci_high"])
    a, b = (t[t["model"] == m].set_index(["seq_len", "seed"])["accuracy"] for m in versus)
    for L in sorted(set(a.index.get_level_values(0)) & set(b.index.get_level_values(0))):
        xa, xb = a.loc[L], b.loc[L]
        if len(xa) > 1 and set(xa.index) == set(xb.index):
            mean, lo, hi = paired_diff_ci(xa, xb)
            rows.append({"seq_len": L, "n": len(xa), "diff": mean, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["seq_len", "n", "diff", "ci_low", "ci_high"])


def plot_mqar(root: str | Path | None = None, title: str | None = None) -> Figure:
    """MQAR recall accuracy against the sequence length per model (mean over seeds, each seed a
    dot), with the chance level dashed; the number of key–value pairs is named at each length."""
    t = mqar_table(root)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for model, g in t.groupby("model", sort=False):
        m = g.groupby("seq_len")["accuracy"].agg(["mean", "size"])
        ax.plot(m.index, m["mean"], "o-", color=color(model), label=f"{model} (seeds per L: {'/'.join(str(int(n)) for n in m['size'])})")
        ax.plot(g["seq_len"], g["accuracy"], ".", color=color(model), alpha=0.5)
    chance = t.groupby("seq_len")["chance"].first()
    ax.plot(chance.index, chance.to_numpy(), ":", color=PALETTE["black"], label="chance", zorder=3)
    lengths = sorted(t["seq_len"].unique())
    pairs = t.groupby("seq_len")["n_pairs"].first()
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [f"{L}\n({pairs[L]} pairs)" for L in lengths])
    if lengths:
        ax.set_xlim(lengths[0] / 1.5, lengths[-1] * 1.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("recall accuracy on held-out queries")
    ax.set_title(title or "MQAR: associative recall vs length", fontsize=11, loc="left")
    ax.legend(fontsize=9)
    return fig


# ---------------------------------------------------------------------------- per-character loss


def ngram_losses(train: str, text: str, order: int = 1) -> np.ndarray:
    """Bits of each character of `text` (from its `order`-th character on) under an add-one
    smoothed character n-gram model counted on `train`: order 0 is the unigram, 1 the bigram.
    A cheap pair of per-character losses for `char_delta_text`. Returns (len(text) - order,)."""
    vocab = sorted(set(train) | set(text))
    idx = {c: i for i, c in enumerate(vocab)}
    V, counts = len(vocab), {}
    for i in range(order, len(train)):
        ctx = train[i - order:i]
        counts.setdefault(ctx, np.zeros(V))[idx[train[i]]] += 1
    out = []
    for i in range(order, len(text)):
        row = counts.get(text[i - order:i], np.zeros(V))
        out.append(-math.log2((row[idx[text[i]]] + 1) / (row.sum() + V)))
    return np.asarray(out)


def char_delta_text(text: str, loss_a, loss_b, label_a: str = "a", label_b: str = "b", scale: float = 2.0):
    """`text` as HTML, each character's background coloured by loss_b − loss_a (bits): blue where
    model a has the lower loss (a's gain), vermillion where b has; white at zero, full colour at
    ±`scale` bits. The losses align with the last len(loss) characters (earlier ones uncoloured).
    Returns an `IPython.display.HTML` (a notebook displays it; `.data` is the markup)."""
    import html

    from IPython.display import HTML

    a, b = np.asarray(loss_a, dtype=float), np.asarray(loss_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) > len(text):
        raise ValueError(f"loss_a {a.shape} and loss_b {b.shape} must be 1-D, equal, at most len(text) = {len(text)}")
    start, gain = len(text) - len(a), b - a
    spans = []
    for i, ch in enumerate(text):
        g = gain[i - start] if i >= start else 0.0
        rgb = (0, 114, 178) if g > 0 else (213, 94, 0)  # Okabe–Ito blue / vermillion
        alpha = min(abs(g) / scale, 1.0)
        shown = "⏎<br>" if ch == "\n" else html.escape(ch)
        spans.append(f'<span title="{g:+.2f} bits" style="background: rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.2f})">'
                     f"{shown}</span>")
    key = (f"<p style='font-size:90%'>mean over the coloured characters: {label_a} {a.mean():.3f}, {label_b} "
           f"{b.mean():.3f} bits; <span style='background:rgba(0,114,178,0.6)'>blue</span>: {label_a} lower, "
           f"<span style='background:rgba(213,94,0,0.6)'>vermillion</span>: {label_b} lower "
           f"(full colour at {scale:g} bits)</p>")
    return HTML(key + "<pre style='white-space: pre-wrap; line-height: 1.5'>" + "".join(spans) + "</pre>")


def char_losses(run_dir: str | Path, n_chars: int = 512, split: str = "valid") -> tuple[str, np.ndarray]:
    """(text, bits): the first n + 1 characters of `split` of the corpus a run trained on, and the
    run's loss in bits on each of the last n of them (n: `n_chars` rounded down to whole windows,
    at least one), read from its `checkpoint.pt` as one row, window by window (the run's window
    length) with the state carried, as in evaluation. HOPE's in-forward writes happen here too. Needs the run's corpus (for a full run,
    the data) and its checkpoint."""
    import torch
    import torch.nn.functional as F

    from nlcore.training.sampling import load
    from nlcore.training.trainer import load_data

    run = load(run_dir)  # the model its checkpoint holds, built from its config (eval mode)
    model, T = run.model, run.seq_len
    corpus = load_data(run.config, run.tokenizer)
    n_chars = max(T, n_chars // T * T)
    ids = corpus.ids[split][: n_chars + 1].long()
    state, out = model.init_state(1, "cpu"), []
    with torch.no_grad():
        for a in range(0, n_chars, T):
            x, y = ids[a:a + T][None], ids[a + 1:a + T + 1][None]  # (1, T)
            kw = {"targets": y} if model.uses_targets else {}
            logits, state = model(x, state, None, **kw)
            out.append(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none"))
    text = run.tokenizer.decode(ids)
    return text, (torch.cat(out) / math.log(2)).numpy()
