"""The notebooks' figures and tables, each drawn from results files only.

Every function reads what an experiment wrote (`summary.json` records, and the per-run
`runs/<config>/seed<k>/{summary.json,metrics.jsonl,meta.json}`) and returns a matplotlib
`Figure` (or a DataFrame), so `REUSE_RESULTS=True` re-plots committed FULL results in seconds.
The one exception is `cms_timeline`, which draws the CMS schedule itself (`nlcore.cms.CMS.due`).

Figures are `matplotlib.figure.Figure` objects, not pyplot ones: no global figure state, nothing
to close. Colours come from the Okabe–Ito palette of `nlcore.report.plotting`; axes carry units;
every interval is a Student-t 95 % interval across seeds (`nlcore.stats`) and says its n.

This module gathers them under one name (`nl.figures.<name>`); each concept lives in its own
module: `figures_cms` (the CMS schedule, per-level change), `figures_ci` (CIs across seeds,
paired differences, the summary table), `figures_curves` (training curves, bpc by position),
`figures_surprise`, `figures_bench`, `figures_recall` (04), `figures_ablations` (05), and
`figures_common` (labels, colours, run-file reading).
"""

from __future__ import annotations

from nlcore.report.figures.ablations import LEVER_COLORS, ablation_ranking
from nlcore.report.figures.bench import bench_figure, bench_overheads, bench_report, plot_scaling
from nlcore.report.figures.ci import ci_bars, ci_panels, paired_diff_bars, summary_table
from nlcore.report.figures.cms import (
    cms_timeline,
    cms_timeline_widget,
    cumulative_change,
    effective_learning,
    update_steps,
)
from nlcore.report.figures.common import LEVEL_COLORS, METRIC_LABELS, metric_label
from nlcore.report.figures.curves import bpc_by_position, paired_curves, seed_dirs, training_curves

# notebooks 04 and 05
from nlcore.report.figures.recall import RECALL_STYLE, recall_curves, recall_explorer
from nlcore.report.figures.surprise import surprise_scale, surprise_telemetry

# isort: split
# notebooks 00_orientation and 01_cms
from nlcore.report.figures.cms import config_table, paired_finding
from nlcore.report.figures.intervals import (
    bpc_ladder,
    level_diagram,
    level_parts,
    t_interval_figure,
)
# notebooks 06_hope_titans and A1_performance
from nlcore.report.figures.bench import (
    BenchQuote,
    batch_ratios,
    floor_table,
    graph_pairs,
    history_reports,
    plot_batch_ratios,
    plot_floor,
    plot_graph_vs_eager,
    report_at,
    report_revision,
)
from nlcore.report.figures.hope import char_delta_text, ngram_losses
# notebooks 02_surprise and 03_persistent_state
from nlcore.report.figures.ci import paired_seeds
from nlcore.report.figures.curves import position_differences

__all__ = [
    "LEVEL_COLORS", "LEVER_COLORS", "METRIC_LABELS", "RECALL_STYLE",
    "ablation_ranking", "bench_figure", "bench_overheads", "bench_report", "plot_scaling", "bpc_by_position", "ci_bars", "ci_panels",
    "cms_timeline", "cms_timeline_widget", "cumulative_change", "effective_learning", "metric_label",
    "paired_curves", "paired_diff_bars", "recall_curves", "seed_dirs", "summary_table", "surprise_scale", "surprise_telemetry",
    "training_curves", "update_steps",
    "bpc_ladder", "config_table", "level_diagram", "level_parts", "paired_finding", "t_interval_figure",
    # notebooks 06_hope_titans and A1_performance
    "BenchQuote", "batch_ratios", "char_delta_text", "floor_table", "graph_pairs", "history_reports", "ngram_losses",
    "plot_batch_ratios", "plot_floor", "plot_graph_vs_eager", "report_at", "report_revision",
    "recall_explorer",
    "paired_seeds", "position_differences",  # notebooks 02_surprise and 03_persistent_state
]
