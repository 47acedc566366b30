"""Notebook 07's helpers (`nlcore.report.notebook.scaling`): the budgets with committed runs, the
parts of the study with none (named, never skipped), and an interval that a single seed lacks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd

from nlcore import paths
from nlcore.report.notebook import scaling
from nlcore.report.notebook.experiment import ExperimentResults


def results(configs):
    return ExperimentResults(exp_dir=paths.REPO_ROOT, runs=pd.DataFrame(), summary=[], meta={}, configs=list(configs))


def test_committed_budgets_keep_the_registry_order_and_drop_budgets_without_runs():
    res = results(["hope_8.2M", "transformer_8.2M", "hope_33M"])
    assert scaling.committed_budgets(res) == {"8.2M": ["hope_8.2M", "transformer_8.2M"], "33M": ["hope_33M"]}


def test_missing_parts_name_the_experiments_and_budgets_without_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    for stem in ("07_lr_sweep", "07_scaling", "07_shakespeare"):
        (tmp_path / "results" / stem).mkdir(parents=True)
        (tmp_path / "results" / stem / "summary.json").write_text(json.dumps([]))
    monkeypatch.setattr(scaling, "committed_results", lambda stem: results(["hope_8.2M", "hope_33M"]))
    assert scaling.missing_parts() == ["`07_width`", "the 131M budget of `07_scaling`"]


def test_takeaways_without_the_main_experiment_say_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    text = scaling.scaling_takeaways(SimpleNamespace(stem="07_scaling"))
    assert "No committed full results of `07_scaling`" in text and "docs/scaling.md" in text


class Numbers:
    def number(self, value, what, digits=3):
        return f"{value:.{digits}f}"


def test_an_interval_needs_two_seeds():
    one = SimpleNamespace(n=1, ci_low=float("nan"), ci_high=float("nan"))
    three = SimpleNamespace(n=3, ci_low=0.0719, ci_high=0.0888)
    assert scaling._interval(Numbers(), one, "falls") == "(n = 1: no interval)"
    assert scaling._interval(Numbers(), three, "falls") == "[0.072, 0.089] (n = 3, falls)"
