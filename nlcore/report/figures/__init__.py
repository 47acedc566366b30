"""The notebooks' figures and tables, each drawn from results files only.

Every function reads what an experiment wrote (`summary.json` records, and the per-run
`runs/<config>/seed<k>/{summary.json,metrics.jsonl,meta.json}`) and returns a matplotlib
`Figure` (or a DataFrame), so the committed view re-plots the committed full results in seconds.
The exceptions draw what they compute: `cms_timeline` (the CMS schedule, `nlcore.cms.CMS.due`),
the orientation's level diagram and interval demonstration, and the live recall explorer.

Figures are `matplotlib.figure.Figure` objects, not pyplot ones: no global figure state, nothing
to close. Colours come from the Okabe–Ito palette of `nlcore.report.plotting`; axes carry units;
every interval is a Student-t 95 % interval across seeds (`nlcore.stats`) and says its n.

This module gathers them under one name (`nl.figures.<name>`); each concept lives in its own
module: `intervals` (notebook 00: levels, the bpc ladder, t intervals), `cms` (the schedule,
per-level change, configuration table), `ci` (intervals across seeds, paired differences, the
summary table), `curves` (paired curves, bpc by position), `surprise`, `recall` (04), `ablations`
(05), `hope` (06: bpc, test-time learning, per-character viewer), `scaling` (07: the rate sweep,
bpc against characters, seconds and parameters, two corpora, bpc against context), `continual`
(08: both corpora over the second phase, forgetting against learning), `bench` (A1: throughput, floors,
graphs, batch ratios, `BenchQuote`), and `common` (labels, colours, run-file reading).
"""

from __future__ import annotations

from nlcore.report.figures.ablations import LEVER_COLORS, ablation_ranking
from nlcore.report.figures.bench import (
    BenchQuote,
    batch_ratios,
    bench_figure,
    bench_overheads,
    bench_report,
    floor_table,
    graph_pairs,
    history_reports,
    plot_batch_ratios,
    plot_floor,
    plot_graph_vs_eager,
    plot_scaling,
    report_at,
    report_revision,
)
from nlcore.report.figures.ci import (
    ci_bars,
    ci_panels,
    paired_diff_bars,
    paired_seeds,
    summary_table,
)
from nlcore.report.figures.cms import (
    cms_timeline,
    config_table,
    cumulative_change,
    effective_learning,
    paired_finding,
    update_steps,
)
from nlcore.report.figures.common import LEVEL_COLORS, METRIC_LABELS, metric_label
from nlcore.report.figures.continual import continual_curves, continual_points, tradeoff
from nlcore.report.figures.curves import (
    bpc_by_position,
    paired_curves,
    position_differences,
    seed_dirs,
    training_curves,
)
from nlcore.report.figures.hope import (
    char_delta_text,
    flops_table,
    ngram_losses,
    plot_flops_vs_time,
)
from nlcore.report.figures.intervals import (
    bpc_ladder,
    level_diagram,
    level_parts,
    t_interval_figure,
)
from nlcore.report.figures.recall import RECALL_STYLE, recall_curves, recall_explorer
from nlcore.report.figures.scaling import (
    bench_seconds,
    compute_matched,
    context_curves,
    context_gain,
    ranking_panels,
    scaling_curves,
    scaling_points,
    scaling_runs,
    sweep_curves,
)
from nlcore.report.figures.surprise import surprise_scale, surprise_telemetry

__all__ = [
    "LEVEL_COLORS", "LEVER_COLORS", "METRIC_LABELS", "RECALL_STYLE", "ablation_ranking", "batch_ratios",
    "bench_figure", "bench_overheads", "bench_report", "BenchQuote", "bpc_by_position", "bpc_ladder",
    "bench_seconds", "char_delta_text", "ci_bars", "ci_panels", "cms_timeline", "compute_matched", "config_table",
    "context_curves", "context_gain", "continual_curves", "continual_points", "cumulative_change",
    "effective_learning", "floor_table", "flops_table", "graph_pairs", "history_reports", "level_diagram", "level_parts",
    "metric_label", "ngram_losses", "paired_curves", "paired_diff_bars", "paired_finding", "paired_seeds",
    "plot_batch_ratios", "plot_floor", "plot_flops_vs_time", "plot_graph_vs_eager", "plot_scaling", "position_differences",
    "ranking_panels", "recall_curves", "recall_explorer", "report_at", "report_revision", "scaling_curves",
    "scaling_points", "scaling_runs", "seed_dirs", "summary_table", "surprise_scale", "surprise_telemetry",
    "sweep_curves", "t_interval_figure", "tradeoff", "training_curves", "update_steps",
]
