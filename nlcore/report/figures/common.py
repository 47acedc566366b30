"""Shared pieces of the figure modules: metric labels, level colours, the figure factory, run-file reading."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from nlcore.report.plotting import CYCLE, PALETTE

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
GREY = "#7f7f7f"


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def level_color(name: str, i: int) -> str:
    return LEVEL_COLORS.get(name, CYCLE[i % len(CYCLE)])


def new_figure(width: float = 6.4, height: float = 4.0, ncols: int = 1, **kw) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False, **kw)[0]
    return fig, axes


def read_json(path: Path):
    from nlcore.results import read_json

    return read_json(path)


def read_metrics(run_dir: Path) -> list[dict]:
    from nlcore.results import read_metrics

    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (the per-step telemetry of that run)")
    return sorted(read_metrics(path), key=lambda r: r.get("step", 0))


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    from nlcore.stats import t_ci

    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    return t_ci(v)
