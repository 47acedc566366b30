r"""Test-time learning in the 06 comparison: HOPE's in-forward writes against dynamic evaluation.

HOPE writes its memories and its CMS chain inside the forward pass, also while it is scored, so
its held-out bpc includes learning from the text it has just read. The baselines' static bpc
does not. Giving them dynamic evaluation (Krause et al. 2018; `nlcore.training.dynamic_eval`: score a
window with θ_w, then θ_{w+1} = θ_w − lr ∇L_w(θ_w)) makes the comparison fair: every model may
learn at test time, each in its own way.

The committed runs (`results/06_dynamic_eval/`) retrain each baseline exactly as
`results/06_hope_titans` did, choose the lr on the first 32 windows of valid only, and then score
all of valid and test. `GRIDS` names the grid each table row reads: ``grid_a`` (lr 1e-3 … 0.3) for
the nested LSTM and the Transformer, ``grid_c`` (lr 0.1, 0.3, 1) for Titans;
`results/06_dynamic_eval/NOTE.md` says what the other grids are and why these are the ones read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from nlcore import paths
from nlcore.stats import paired_diff_ci, t_ci

STEM = "06_dynamic_eval"
GRIDS = {"nested_lstm": "grid_a", "transformer": "grid_a", "titans_linear": "grid_c"}  # the folder per model
BASELINES = tuple(GRIDS)


def dynamic_runs(root: str | Path | None = None, grids: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (model, seed), each model from its folder in `grids` (default `GRIDS`): static and
    dynamic valid/test bpc and the chosen lr."""
    base = Path(root or paths.results_root("full") / STEM)
    files = [f for model, grid in (grids or GRIDS).items() for f in sorted((base / grid / model).glob("seed*.json"))]
    rows = []
    for f in files:
        r = json.loads(f.read_text())
        rows.append({k: r[k] for k in ("label", "seed", "dynamic_lr", "valid_bpc", "valid_bpc_dynamic",
                                       "test_bpc", "test_bpc_dynamic")})
    if not rows:
        raise FileNotFoundError(f"no dynamic-evaluation runs under {base} ({grids or GRIDS})")
    return pd.DataFrame(rows).rename(columns={"label": "model"})


def _ci(values) -> str:
    m, lo, hi = t_ci(list(values))
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def test_time_table(root: str | Path | None = None, hope_dir: str | Path | None = None) -> pd.DataFrame:
    """Per model: mean and 95 % Student-t interval over seeds of valid and test bpc, static and with
    dynamic evaluation, the paired test gain, and HOPE's own (static: its writes are in the forward)."""
    from nlcore.report.figures.hope import runs as hope_runs

    df = dynamic_runs(root)
    out = []
    for model, g in df.groupby("model", sort=False):
        g = g.sort_values("seed")
        gain = paired_diff_ci(g["test_bpc"].to_numpy(), g["test_bpc_dynamic"].to_numpy())
        out.append({"model": model, "test-time learning": f"dynamic evaluation, lr {g['dynamic_lr'].median():g}",
                    "n": len(g), "valid static": _ci(g["valid_bpc"]), "valid": _ci(g["valid_bpc_dynamic"]),
                    "test static": _ci(g["test_bpc"]), "test": _ci(g["test_bpc_dynamic"]),
                    "test gain": f"{gain[0]:.3f} [{gain[1]:.3f}, {gain[2]:.3f}]",
                    "test_mean": float(g["test_bpc_dynamic"].mean())})
    hope = [s for s in hope_runs(hope_dir).get("hope", {}).values() if s is not None]
    if hope:
        out.append({"model": "hope", "test-time learning": "in-forward writes (static scoring)", "n": len(hope),
                    "valid static": "—", "valid": _ci(s["valid_bpc"] for s in hope), "test static": "—",
                    "test": _ci(s["test_bpc"] for s in hope), "test gain": "—",
                    "test_mean": sum(s["test_bpc"] for s in hope) / len(hope)})
    return pd.DataFrame(out).sort_values("test_mean", kind="mergesort").reset_index(drop=True)


def plot_test_time(root: str | Path | None = None, hope_dir: str | Path | None = None) -> Figure:
    """Test bpc per seed, static (hollow) and with test-time learning (filled), best on top."""
    from nlcore.report.figures.hope import color
    from nlcore.report.figures.hope import runs as hope_runs

    df = dynamic_runs(root)
    hope = [s["test_bpc"] for s in hope_runs(hope_dir).get("hope", {}).values() if s is not None]
    order = df.groupby("model")["test_bpc_dynamic"].mean().sort_values(ascending=False).index.tolist()
    fig = Figure(figsize=(7.0, 0.6 * (len(order) + 2) + 1.0))
    ax = fig.subplots()
    for i, model in enumerate(order):
        g = df[df["model"] == model]
        ax.scatter(g["test_bpc"], [i] * len(g), facecolors="none", edgecolors=color(model), s=40)
        ax.scatter(g["test_bpc_dynamic"], [i] * len(g), color=color(model), s=40)
    if hope:
        ax.scatter(hope, [len(order)] * len(hope), color=color("hope"), s=40)
        order.append("hope (in-forward writes)")
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel("test bits per character, one dot per seed\n(hollow: static; filled: with test-time learning)")
    means = {m: float(df[df["model"] == m]["test_bpc_dynamic"].mean()) for m in df["model"].unique()}
    if hope:
        means["hope"] = sum(hope) / len(hope)
    best = min(means, key=means.get)
    ax.set_title(f"With test-time learning for every model,\n{best} still has the lowest test bpc", fontsize=11, loc="left")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
