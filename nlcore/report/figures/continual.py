"""Notebook 08's figures: held-out bpc on both corpora over the second phase of a continual run,
and the trade-off between forgetting corpus A and learning corpus B."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nlcore.report.figures.common import GREY, mean_ci, new_figure
from nlcore.report.plotting import CYCLE, band


def continual_points(exp_dir: str | Path, configs: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (config, seed, evaluation point) from every finished run's `continual.jsonl`:
    point, step_b (phase-B steps taken), a_valid_bpc, b_valid_bpc. Point 0 is the end of phase A."""
    from nlcore.results import read_metrics

    rows = []
    for summary in sorted(Path(exp_dir).glob("runs/*/seed*/summary.json")):
        run = summary.parent
        config = run.parent.name
        if configs is not None and config not in configs:
            continue
        for r in read_metrics(run / "continual.jsonl"):
            rows.append({"config": config, "seed": int(run.name[4:]), "point": r["point"], "step_b": r["step_b"],
                         "a_valid_bpc": r["a_valid_bpc"], "b_valid_bpc": r["b_valid_bpc"]})
    if not rows:
        raise FileNotFoundError(f"no finished continual runs under {Path(exp_dir) / 'runs'} "
                                f"(runs/<config>/seed<k>/continual.jsonl beside summary.json)")
    return pd.DataFrame(rows).sort_values(["config", "seed", "point"], ignore_index=True)


def _color(configs: Sequence[str], config: str) -> str:
    return CYCLE[list(configs).index(config) % len(CYCLE)]


def continual_curves(points: pd.DataFrame, configs: Sequence[str], relative: bool = False) -> Figure:
    """Valid bpc on corpus A (left) and corpus B (right) against phase-B steps, mean across seeds
    with a 95 % t band. `relative`: each seed's change from its own point 0 (the end of phase A),
    so the left panel is forgetting so far and the right one minus the learning so far."""
    fig, axes = new_figure(11.0, 4.2, ncols=2)
    for ax, col, corpus in zip(axes, ("a_valid_bpc", "b_valid_bpc"), ("A (WikiText-2)", "B (Tiny Shakespeare)")):
        for config in configs:
            p = points[points["config"] == config]
            table = p.pivot(index="step_b", columns="seed", values=col).sort_index()  # (steps, seeds)
            if relative:
                table = table - table.iloc[0]
            stats = np.array([mean_ci(row) for row in table.to_numpy(dtype=np.float64)])
            band(ax, table.index.to_numpy(), stats[:, 0], stats[:, 1], stats[:, 2], label=config,
                 n=table.shape[1], color=_color(configs, config), marker="o", ms=3)
        if relative:
            ax.axhline(0.0, color=GREY, lw=0.8, ls="--")
        ax.set_xlabel("phase-B training steps (on corpus B)")
        ax.set_ylabel(("change in " if relative else "") + f"validation bpc on {corpus}")
        ax.set_title(f"corpus {corpus}", fontsize=11)
    axes[1].legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def tradeoff(summary_records, configs: Sequence[str], x: str = "forgetting_bpc", y: str = "learning_bpc") -> Figure:
    """Each configuration's mean forgetting (the rise of A's valid bpc over phase B) against its
    mean learning (the fall of B's valid bpc), with 95 % t intervals in both directions.
    Lower right is better on neither; upper left learns more and forgets less."""
    recs = {(r["config"], r["metric"]): r for r in summary_records}
    fig, (ax,) = new_figure(6.8, 4.6)
    for config in configs:
        rx, ry = recs.get((config, x)), recs.get((config, y))
        if rx is None or ry is None:
            continue
        c = _color(configs, config)

        def err(r):
            return None if r["ci_low"] is None else [[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]]

        ax.errorbar(rx["mean"], ry["mean"], xerr=err(rx), yerr=err(ry), fmt="o", color=c, capsize=3,
                    label=f"{config} (n={rx['n_seeds']})")
    ax.axvline(0.0, color=GREY, lw=0.8, ls="--")
    ax.set_xlabel("forgetting: rise of validation bpc on A\nover phase B (lower is better)")
    ax.set_ylabel("learning: fall of validation bpc on B\nover phase B (higher is better)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
