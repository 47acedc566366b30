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
from nlcore.report.figures.recall import RECALL_STYLE, recall_curves
from nlcore.report.figures.surprise import surprise_scale, surprise_telemetry

# isort: split
# notebooks 02_surprise and 03_persistent_state
from nlcore.report.figures.ci import paired_seeds
from nlcore.report.figures.curves import position_differences

__all__ = [
    "LEVEL_COLORS", "LEVER_COLORS", "METRIC_LABELS", "RECALL_STYLE",
    "ablation_ranking", "bench_figure", "bench_overheads", "bench_report", "plot_scaling", "bpc_by_position", "ci_bars", "ci_panels",
    "cms_timeline", "cms_timeline_widget", "cumulative_change", "effective_learning", "metric_label",
    "paired_curves", "paired_diff_bars", "recall_curves", "seed_dirs", "summary_table", "surprise_scale", "surprise_telemetry",
    "training_curves", "update_steps",
    "paired_seeds", "position_differences",  # notebooks 02_surprise and 03_persistent_state
]
