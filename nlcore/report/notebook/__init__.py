"""What a notebook calls: `ctx = nl.notebook.setup("01_cms", view=VIEW)` first.

- `setup` (`setup.py`): seeds, determinism, plot style, inline figures; the `Context` knows the
  notebook's view and where results come from and figures go; `ctx.show(fig, slug)` saves a figure
  and displays exactly the saved PNG.
- `experiment` (`experiment.py`): the notebook's registered grid, run in the smoke and full views
  (configuration by configuration; a failure is reported and recorded, never dropped silently) or
  read back from the committed results in the committed view.
- `Quote`, `takeaways` (`cite.py`): numbers in the text, rendered from committed results.
- `continual_takeaways` (`continual.py`): notebook 08's takeaways from its committed results.
- `scaling_takeaways` (`scaling.py`, with notebook 07's other helpers): 07's takeaways, naming the
  parts of the study that have no committed runs yet.
- `model_samples`, `samples_html` (`samples.py`): what trained models write, side by side.
- `checks.py` (reference levels, update counts, finiteness), `compare.py` (paired differences,
  per-corpus panels, surprise scales), `ablations.py` (several experiments at once, notebook 05).
"""

from __future__ import annotations

from nlcore.report.notebook.ablations import (
    ABLATION_STEMS,
    ablation_lever,
    ablation_runs,
    ablation_table,
    collect_experiments,
    select_levers,
    separation,
)
from nlcore.report.notebook.checks import (
    all_finite,
    corpus_summary,
    corpus_unigram_bpc,
    expected_updates,
    unigram_bpc,
    unigram_reference,
    updates_check,
)
from nlcore.report.notebook.cite import Quote, takeaways
from nlcore.report.notebook.compare import (
    corpus_panels,
    paired_differences,
    surprise_scales,
    unpaired_separated,
)
from nlcore.report.notebook.continual import continual_takeaways
from nlcore.report.notebook.experiment import (
    ExperimentResults,
    committed_results,
    experiment,
    load_experiment,
    summary_field,
)
from nlcore.report.notebook.samples import model_samples, samples_html
from nlcore.report.notebook.scaling import scaling_takeaways
from nlcore.report.notebook.setup import Context, setup

__all__ = [
    "ABLATION_STEMS", "ablation_lever", "ablation_runs", "ablation_table", "all_finite",
    "collect_experiments", "committed_results", "Context", "continual_takeaways", "corpus_panels", "corpus_summary",
    "corpus_unigram_bpc", "expected_updates", "experiment", "ExperimentResults", "load_experiment",
    "model_samples", "paired_differences", "Quote", "samples_html", "scaling_takeaways", "select_levers", "separation", "setup", "summary_field", "surprise_scales",
    "takeaways", "unigram_bpc", "unigram_reference", "unpaired_separated", "updates_check",
]
