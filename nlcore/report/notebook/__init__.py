"""What a notebook calls first: `ctx = nl.notebook.setup("01_cms", mode=MODE, seed=SEED, ...)`.

`setup()` maps the papermill parameters (primitives only) to a `Context`: it seeds every RNG,
sets the determinism flags (strict in smoke, warn-only in full), applies the plot style, shows
figures inline when it runs inside a kernel, and prints a header (mode, device, torch, git).
The context knows where the notebook's outputs go (`fig_dir`, `results_dir`, from `nlcore.paths`)
and saves figures by slug only (`ctx.save(fig, "ci_valid_bpc")`).

`experiment(ctx)` is the notebook's experiment: the registered grid of `nlcore.experiments`
run configuration by configuration (smoke: in-process on the smoke preset; full: whatever is not
yet in `results/`), or, with `reuse_results`, the committed results read back without training.
A configuration that fails is reported and recorded (`meta.json["failed"]`), never dropped
silently; the others are still aggregated.

This module gathers them under one name (`nl.notebook.<name>`); each concept lives in its own
module: `notebook_setup` (`setup`, `Context`), `notebook_experiment` (`experiment`, reading results
back), `notebook_checks` (reference levels, update counts, finiteness), `notebook_compare` (paired
differences, per-corpus panels, surprise scales) and `notebook_ablations` (several experiments at
once, 05).
"""

from __future__ import annotations

from nlcore.report.notebook.ablations import (
    ABLATION_STEMS,
    ablation_lever,
    ablation_runs,
    ablation_table,
    collect_experiments,
)
from nlcore.report.notebook.checks import all_finite, expected_updates, unigram_bpc, updates_check
from nlcore.report.notebook.compare import corpus_panels, paired_differences, surprise_scales
from nlcore.report.notebook.experiment import (
    ExperimentResults,
    committed_results,
    experiment,
    load_experiment,
    summary_field,
)
from nlcore.report.notebook.setup import Context, setup

__all__ = [
    "ABLATION_STEMS", "Context", "ExperimentResults",
    "ablation_lever", "ablation_runs", "ablation_table", "all_finite", "collect_experiments",
    "committed_results", "corpus_panels", "expected_updates", "experiment", "load_experiment",
    "paired_differences", "setup", "summary_field", "surprise_scales", "unigram_bpc", "updates_check",
]
