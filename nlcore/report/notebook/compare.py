"""Paired and unpaired comparisons across seeds, per-corpus reference panels and surprise signal scales."""

from __future__ import annotations

import pandas as pd

from nlcore.report.notebook.checks import unigram_bpc
from nlcore.report.notebook.experiment import ExperimentResults, summary_field


def paired_differences(runs: pd.DataFrame, baselines, metric: str = "valid_bpc") -> pd.DataFrame:
    """Per configuration, the seed-by-seed difference `metric(config) − metric(baseline)` over the
    seeds both ran: mean and 95 % t interval (`nlcore.stats.paired_diff_ci`), n, how many
    seeds came out lower, and the baseline's own (unpaired) CI half-width for scale.
    `baselines` maps configuration -> its baseline (a str applies one baseline to every
    configuration in `runs`); a configuration is not compared with itself."""
    from nlcore import stats

    m = runs[runs["metric"] == metric]
    by = {str(c): g.set_index("seed")["value"].astype(float) for c, g in m.groupby("config", sort=False)}
    if isinstance(baselines, str):
        baselines = {c: baselines for c in by}
    rows = []
    for config, base in baselines.items():
        if config == base or config not in by or base not in by:
            continue
        seeds = sorted(set(by[config].index) & set(by[base].index))
        if not seeds:
            continue
        a, b = by[config].loc[seeds].to_numpy(), by[base].loc[seeds].to_numpy()  # (n,), same seed order
        mean, lo, hi = stats.paired_diff_ci(a, b)
        _, blo, bhi = stats.t_ci(b)
        rows.append({"config": config, "baseline": base, "n": len(seeds), "mean": mean, "ci_low": lo, "ci_high": hi,
                     "seeds_lower": int((a < b).sum()), "baseline_half_width": (bhi - blo) / 2})
    cols = ["config", "baseline", "n", "mean", "ci_low", "ci_high", "seeds_lower", "baseline_half_width"]
    return pd.DataFrame(rows, columns=cols)


def unpaired_separated(summary: list[dict], baselines: dict[str, str], metric: str = "valid_bpc") -> list[str]:
    """The configurations (keys of `baselines`, config -> its baseline) whose 95 % interval across
    seeds does not overlap their baseline's: what a reader of unpaired intervals could call
    different. A configuration or baseline without a finite interval (one seed) is never separated."""
    import math

    ci = {r["config"]: (r.get("ci_low"), r.get("ci_high")) for r in summary if r["metric"] == metric}

    def finite(c: str) -> bool:
        return c in ci and all(v is not None and math.isfinite(v) for v in ci[c])

    return [c for c, b in baselines.items() if c != b and finite(c) and finite(b)
            and (ci[c][0] > ci[b][1] or ci[c][1] < ci[b][0])]


def corpus_panels(res: ExperimentResults, prefixes: dict[str, str]) -> list[tuple[str, str, float, str]]:
    """Panels for `nlcore.report.figures.ci_panels`, one per configuration-label prefix present
    (`{prefix: title}`), each with its corpus's reference level: the entropy rate (the optimum)
    where the corpus knows it (synthetic), else the unigram model."""
    panels = []
    for prefix, title in prefixes.items():
        configs = [c for c in res.configs if c.startswith(prefix)]
        if not configs:
            continue
        rate = summary_field(res, configs[0], "entropy_rate_bits")
        if rate is not None:
            panels.append((prefix, title, float(rate), "entropy rate (the optimum)"))
        else:
            panels.append((prefix, title, unigram_bpc(res.run_dirs(configs[0])[0]), "unigram model"))
    return panels


def surprise_scales(res: ExperimentResults) -> pd.DataFrame:
    """`nlcore.report.figures.surprise_scale` of every run of `res` that used the surprise objective,
    with config and seed columns."""
    from nlcore.report.figures import surprise_scale

    frames = [surprise_scale(run).assign(config=c, seed=int(run.name[4:]))
              for c in res.configs for run in res.run_dirs(c)]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
