"""The surprise objective's telemetry of one run, and the scale of its signal."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from nlcore.report.figures.common import GREY, level_color, new_figure, read_json, read_metrics


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
    cfg = read_json(Path(run_dir) / "meta.json")["config"]
    weights = {k: float(v) for k, v in (cfg["surprise"]["weights"] or {}).items() if v}
    numel = cfg["data"]["batch_size"] * cfg["data"]["seq_len"] * cfg["model"]["d_model"]  # N = B·T·d
    rows = []
    for rec in read_metrics(Path(run_dir)):
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
    fig, (ax, bx, cx) = new_figure(13.0, 4.0, ncols=3)
    for i, (level, g) in enumerate(df.groupby("level", sort=False)):
        color = level_color(level, i)
        lam = g["weight"].iloc[0]
        ax.plot(g["step"], g["aux_loss"], "o-", ms=3, color=color, label=f"{level} (λ={lam:g})")
        bx.plot(g["step"], g["signal_norm"], "o-", ms=3, color=color, label=f"{level}: ‖∇_y L‖_F")
        cx.plot(g["step"], g["rms_residual"], "o-", ms=3, color=color, label=f"{level}: rms(y − t)")
        cx.plot(g["step"], g["rms_signal"], "s--", ms=3, color=color, label=f"{level}: rms(t) ≤ ‖∇_y L‖_F/√N")
    clip = float(df["clip"].iloc[0])
    bx.axhline(clip, color=GREY, linestyle="--", linewidth=1.2, label=f"clip threshold c = {clip:g}")
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
