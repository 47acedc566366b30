"""The helpers of notebooks 00_orientation and 01_cms: orientation figures, the registry's
configuration table, the paired-difference title and the committed unigram level."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from matplotlib.figure import Figure

import nlcore as nl
from nlcore.report.figures.intervals import _coverage


def test_level_parts_cover_every_parameter_with_its_level():
    from nlcore.models import build_model

    cfg = nl.preset("seed")
    rows = nl.figures.level_parts(cfg, vocab_size=50)
    assert [r["part"] for r in rows] == ["embedding", "LSTM", "FFN (medium)", "FFN (slow)", "head"]
    assert {r["level"]: r["chunk"] for r in rows} == {lv.name: lv.chunk for lv in cfg.cms.levels}
    model = build_model(cfg.model, 50, chunks=(16, 256))
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())


def test_level_diagram_states_the_chunks():
    fig = nl.figures.level_diagram(nl.preset("smoke"), vocab_size=20)
    assert isinstance(fig, Figure)
    assert "1, 4, 16" in fig.axes[0].get_title(loc="left")


def test_bpc_ladder_sorts_worst_on_top():
    fig = nl.figures.bpc_ladder({"a": 1.0, "b": 3.0, "c": 2.0}, highlight=["b"])
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["b", "c", "a"]


def test_t_interval_figure_and_coverage():
    fig = nl.figures.t_interval_figure(3, 0.01)
    assert "2.2" in fig.axes[0].get_title(loc="left")  # t(0.975, 2) / 2 = 4.30 / 2
    assert abs(_coverage(3, nl.stats.t_quantile(0.975, 2)) - 0.95) < 0.01
    assert abs(_coverage(3, 2.0) - 0.816) < 0.01  # P(|T_2| <= 2)
    with pytest.raises(ValueError, match="n >= 2"):
        nl.figures.t_interval_figure(1, 0.01)


def test_config_table_is_the_registry():
    table = nl.figures.config_table("01_cms", "full")
    assert list(table.index) == nl.EXPERIMENTS["01_cms"].labels
    assert table.loc["default", "FFN output init"] == "random"
    assert table.loc["zero_init_ffn", "FFN output init"] == "zero"
    assert table.loc["no_norm_residual", "LayerNorm + residual"] == "no"
    assert "0.005/256" in table.loc["adam_lr_div_chunk", "slow"]
    assert table.loc["cms_off", "slow"].startswith("C=1: adamw")


def test_paired_finding_names_each_side():
    diffs = pd.DataFrame({"config": ["a", "b", "c", "d"], "baseline": ["x", "x", "x", "y"],
                          "mean": [-1.0, 1.0, 0.0, 0.5], "ci_low": [-2.0, 0.5, -1.0, math.nan],
                          "ci_high": [-0.5, 2.0, 1.0, math.nan]})
    assert nl.figures.paired_finding(diffs) == "vs x: below: a; above: b; not separated: c\nvs y: not separated: d"


def test_committed_unigram_level():
    corpus = nl.notebook.corpus_summary("wikitext2")
    v = nl.notebook.corpus_unigram_bpc("wikitext2")
    assert v == corpus["unigram_bpc"]["valid"]
    assert 0 < v < math.log2(corpus["stats"]["vocab_size"])
    res = nl.notebook.committed_results("01_cms")
    assert nl.notebook.unigram_reference(res) == v  # read from the committed summary, no data needed
    with pytest.raises(FileNotFoundError, match="no committed corpus summary"):
        nl.notebook.corpus_summary("no_such_corpus")
