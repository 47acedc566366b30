"""Step-time reports of `nlcore.bench.step`: a table and a figure of step time and overhead."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nlcore.bench.step import SCALING
from nlcore.paths import REPO_ROOT
from nlcore.report.figures.common import GREY, new_figure, read_json
from nlcore.report.notebook.cite import Quote
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


# Report configuration names read under the current ones: "fast" names the surprise objective's hooks implementation.
REPORT_LABELS = {"seed_surprise_fast": "seed_surprise_hooks", "seed_surprise_fast_eager": "seed_surprise_hooks_eager"}


def bench_report(name: str) -> dict:
    """A committed benchmark report, `results/bench/<name>.json` (e.g. "seed", "scaling"), with its
    configurations under the labels of `REPORT_LABELS`."""
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
    fig, axes = new_figure(11, 3.4, ncols=3) if ax_row is None else (None, ax_row)
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
    return fig


# ---------------------------------------------------------------------------- appendix A1


def report_revision(report: Mapping) -> str:
    """The short git revision a report was measured at."""
    git = report.get("git")
    rev = git if isinstance(git, str) else (git or {}).get("revision") or ""
    return rev[:7]


def history_reports(prefix: str = "models_06") -> dict[str, str]:
    """Committed earlier measurements `results/bench/history/<prefix>_<rev>.json`: label -> name
    for `bench_report` (the label is the revision), in file order."""
    folder = REPO_ROOT / "results" / "bench" / "history"
    return {p.stem.removeprefix(prefix + "_"): f"history/{p.stem}" for p in sorted(folder.glob(f"{prefix}_*.json"))}


def report_at(prefix: str, revision: str) -> dict:
    """The committed `<prefix>` report measured at `revision` (the current one or one in history/)."""
    current = bench_report(prefix)
    if report_revision(current) == revision[:7]:
        return current
    hist = history_reports(prefix)
    if revision[:7] not in hist:
        raise FileNotFoundError(f"no committed {prefix} report at revision {revision} (have {sorted(hist)})")
    return bench_report(hist[revision[:7]])


def graph_pairs(reports: Mapping[str, Mapping], pairs: Sequence[tuple[str, str, str]]) -> pd.DataFrame:
    """One row per (report name, graphed config, eager config): both median step times (ms) and the
    speed-up eager / graphed."""
    rows = []
    for name, graphed, eager in pairs:
        cs = reports[name]["configs"]
        g, e = cs[graphed]["step_ms_median"], cs[eager]["step_ms_median"]
        rows.append({"report": name, "graphed": graphed, "eager": eager, "graphed_ms": g, "eager_ms": e,
                     "speedup": e / g})
    return pd.DataFrame(rows)


def plot_graph_vs_eager(table: pd.DataFrame) -> Figure:
    """Step time with the graphed fast path and eager (no CUDA graph, no compile), per model:
    paired bars, the speed-up written beside each pair."""
    fig, (ax,) = new_figure(7.4, 1.4 + 0.6 * len(table))
    ys = np.arange(len(table))
    ax.barh(ys - 0.2, table["eager_ms"], height=0.4, color=CYCLE[1], label="eager", hatch="//", edgecolor="white")
    ax.barh(ys + 0.2, table["graphed_ms"], height=0.4, color=CYCLE[0], label="CUDA graph (+ compile)")
    for y, r in zip(ys, table.itertuples()):
        ax.text(r.eager_ms * 1.03, y - 0.2, f"{r.speedup:.1f}× faster graphed", va="center", fontsize=9)
    ax.set_yticks(ys, [f"{r.graphed} ({r.report})" for r in table.itertuples()])
    ax.set_ylim(len(table) - 0.4, -0.6)
    ax.set_xlim(0, table["eager_ms"].max() * 1.45)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("median step time (ms; forward, backward, optimizer)")
    ax.legend(loc="upper right", fontsize=9)  # clear of the longest bar (the last row here)
    ax.set_title(f"CUDA graphs make a step {table['speedup'].min():.1f}–{table['speedup'].max():.1f}× faster "
                 "than eager PyTorch", fontsize=11, loc="left")
    return fig


def floor_table(report: Mapping) -> pd.DataFrame:
    """Per configuration of a report with measured floors (`floor_ms`, the cuDNN LSTM's forward and
    backward alone at the same shape): step and floor time (ms) and the floor's share of the step."""
    rows = [{"config": k, "batch_size": c["batch_size"], "seq_len": c["seq_len"], "step_ms": c["step_ms_median"],
             "floor_ms": c["floor_ms"], "floor_share": c["floor_ms"] / c["step_ms_median"]}
            for k, c in report["configs"].items() if c.get("floor_ms")]
    return pd.DataFrame(rows)


def plot_floor(report: Mapping) -> Figure:
    """Step time split into the cuDNN floor (the LSTM alone) and everything else, per configuration
    of a `--scaling` report; the floor's share written on each bar."""
    t = floor_table(report)
    fig, (ax,) = new_figure(7.4, 1.4 + 0.42 * len(t))
    ys = np.arange(len(t))
    ax.barh(ys, t["floor_ms"], color=CYCLE[0], label="cuDNN LSTM forward + backward alone (the floor)")
    ax.barh(ys, t["step_ms"] - t["floor_ms"], left=t["floor_ms"], color=GREY, alpha=0.6,
            label="everything else in the step")
    for y, r in zip(ys, t.itertuples()):
        ax.text(r.step_ms * 1.02, y, f"floor {100 * r.floor_share:.0f} %", va="center", fontsize=9)
    ax.set_yticks(ys, [f"{r.config} ({r.batch_size}×{r.seq_len})" for r in t.itertuples()])
    ax.set_ylim(len(t) - 0.5, -0.5)
    ax.set_xlim(0, t["step_ms"].max() * 1.25)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(f"median step time (ms) on {report.get('device_name')}")
    ax.legend(loc="center right", fontsize=8.5)
    ax.set_title(f"The cuDNN recurrence alone is {100 * t['floor_share'].min():.0f}–{100 * t['floor_share'].max():.0f} % "
                 "of the seed model's step", fontsize=11, loc="left")
    return fig


def batch_ratios(small: Mapping, large: Mapping, suffix: str = "_b64") -> pd.DataFrame:
    """Per model in both reports: step time relative to each report's baseline at the small and at
    the large batch (the large report's configs are named `<model><suffix>`)."""
    rows = []
    for name, c in small["configs"].items():
        big = large["configs"].get(name + suffix)
        if big is not None and c.get("ratio_to_baseline") is not None:
            rows.append({"model": name, "batch_small": c["batch_size"], "ratio_small": c["ratio_to_baseline"],
                         "batch_large": big["batch_size"], "ratio_large": big["ratio_to_baseline"]})
    return pd.DataFrame(rows)


def plot_batch_ratios(table: pd.DataFrame, revision: str = "") -> Figure:
    """Step time relative to the Transformer at the small batch (hollow) and the large (filled),
    an arrow from one to the other per model (log x)."""
    t = table[(table["ratio_small"] != 1.0) | (table["ratio_large"] != 1.0)]  # not the baseline itself
    t = t.sort_values("ratio_small").reset_index(drop=True)
    fig, (ax,) = new_figure(7.4, 1.6 + 0.5 * len(t))
    for y, r in t.iterrows():
        ax.annotate("", xy=(r["ratio_large"], y), xytext=(r["ratio_small"], y),
                    arrowprops={"arrowstyle": "->", "color": GREY})
        ax.plot(r["ratio_small"], y, "o", mfc="white", mec=CYCLE[0], markersize=8)
        ax.plot(r["ratio_large"], y, "o", color=CYCLE[0], markersize=8)
        ax.text(max(r["ratio_small"], r["ratio_large"]) * 1.12, y,
                f"{r['ratio_small']:.2f}× → {r['ratio_large']:.2f}×", va="center", fontsize=9)
    ax.set_xscale("log")
    ax.set_xlim(0.8, t[["ratio_small", "ratio_large"]].max().max() * 3)
    ax.set_yticks(range(len(t)), list(t["model"]))
    ax.set_ylim(len(t) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    bs, bl = t["batch_small"].iloc[0], t["batch_large"].iloc[0]
    ax.set_xlabel(f"step time relative to the Transformer's at the same batch (log; hollow: {bs} rows, filled: {bl})")
    moved = (t["ratio_small"] / t["ratio_large"])
    top = t.loc[moved.idxmax(), "model"]
    ax.set_title(f"At {bl} rows {top} catches up with the Transformer; the memories stay slower\n"
                 + (f"(both batches measured at revision {revision})" if revision else ""), fontsize=11, loc="left")
    return fig


class BenchQuote(Quote):
    """Numbers of one committed benchmark report `results/bench/<name>.json`, rendered for prose and
    recorded in the notebook's ledger like `nl.notebook.Quote`'s (the same entry format; field
    "bench" for a value read at `keys["path"]`, "derived" for a quotient of two such values)."""

    def __init__(self, ctx, name: str) -> None:  # noqa: D107 (a report, not a summary.json)
        self.notebook, self.name = ctx.stem, name
        self.dir = REPO_ROOT / "results" / "bench"
        self.file = self.dir / f"{name}.json"
        if not self.file.is_file():
            raise FileNotFoundError(f"no committed benchmark report at {self.file}")
        self.records = read_json(self.file)

    def get(self, *path):
        """The value at `path` (keys and list indices) of the report as stored."""
        v = self.records
        for k in path:
            v = v[k]
        return v

    def value(self, *path, digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
        """The value at `path` times `scale`, e.g. `value("configs", "hope", "ratio_to_baseline", suffix="×")`."""
        v = self.get(*path)
        return self._cite(f"{v * scale:.{digits}f}{suffix}", "/".join(map(str, path)), str(path[-1]), "bench", v,
                          {"path": list(path), "scale": scale})

    def ratio(self, num: Sequence, den: Sequence, what: str, digits: int = 1, scale: float = 1.0,
              suffix: str = "×") -> str:
        """The quotient of the values at two paths times `scale` (`what` says what it is), e.g. a
        share in per cent with `scale=100, suffix=" %"`."""
        v = self.get(*num) / self.get(*den)
        return self._cite(f"{v * scale:.{digits}f}{suffix}", what, "", "derived", v,
                          {"path": [list(num), list(den)], "scale": scale})
