"""Notebook 06's side-by-side samples: the committed record read back and rendered, best model first."""

from __future__ import annotations

import json

from nlcore.report.notebook import model_samples, samples_html
from nlcore.report.notebook.setup import Context


def _record():
    rows = [{"run": f"{c}/seed0", "config": c, "model": "m", "test_bpc": b, "valid_bpc": b, "prompt": p,
             "seed": 0, "text": f"{c} wrote <this> after {p.strip()}"}
            for c, b in (("worse", 2.5), ("best", 1.5), ("unscored", None)) for p in ("The ", "A ")]
    return {"settings": {"chars": 20, "temperature": 0.8, "top_k": None, "seeds": [0], "write": True,
                         "prompts": ["The ", "A "]}, "samples": rows}


def test_the_committed_view_reads_the_committed_record_or_says_there_is_none(tmp_path):
    ctx = Context("06_hope_titans", "committed", 0, "cpu", tmp_path / "fig", tmp_path / "results")
    assert model_samples(ctx, res=None) is None
    (tmp_path / "results" / "samples").mkdir(parents=True)
    (tmp_path / "results" / "samples" / "samples.json").write_text(json.dumps(_record()))
    assert model_samples(ctx, res=None) == _record()


def test_one_prompt_per_table_lowest_bpc_first_text_escaped():
    page = samples_html(_record(), "A ")
    assert page.index("<code>best</code>") < page.index("<code>worse</code>") < page.index("<code>unscored</code>")
    assert "1.500" in page and "2.500" in page and "no summary" in page
    assert "&lt;this&gt;" in page and "<this>" not in page  # model text never becomes markup
    assert "after A" in page and "after The" not in page
    assert samples_html(_record()) == samples_html(_record(), "The ")  # the first prompt by default
    assert "3 runs, 20 characters each, temperature 0.8, seed 0" in page
