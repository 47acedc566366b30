"""Every notebook runs in smoke mode through the runner (in-process papermill, one kernel each).

Checks per notebook: the runner succeeds, the executed notebook has every code cell executed
and no error output, every figure the notebook saves (`ctx.save(fig, "slug")`) exists as .png and
.pdf under build/smoke/figures/<stem>/, and the experiment's summary.json has the schema of
nlcore.results. The build root is the test's tmp folder (conftest patches nlcore.paths.BUILD;
the runner hands it to the kernel as $NLCORE_BUILD).
"""

from __future__ import annotations

import json
import math
import re
import warnings

import nbformat
import pytest

from nlcore import paths
from nlcore.report import runner

NOTEBOOKS = runner.discover()
SMOKE_BUDGET_S = 60  # conventions §2.3: each notebook <= 60 s on 2 CPU cores
SAVE = re.compile(r"""ctx\.save\(\s*\w+\s*,\s*["']([a-z0-9_]+)["']\s*\)""")
SUMMARY_KEYS = {"config": str, "metric": str, "mean": (float, type(None)), "ci_low": (float, type(None)),
                "ci_high": (float, type(None)), "n_seeds": int}


@pytest.mark.notebooks
@pytest.mark.parametrize("src", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(src, capsys):
    from nlcore.experiments import EXPERIMENTS

    stem = src.stem
    rc = runner.run_notebooks("smoke", only=stem, verbose=False)
    out = capsys.readouterr()
    assert rc == 0, f"runner failed for {stem}:\n{out.err[-3000:]}"

    # the executed notebook: every code cell ran, none produced an error
    nb = nbformat.read(paths.BUILD / "executed" / "smoke" / f"{stem}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "a code cell did not run"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"error output in {stem}: {errors[0].ename}: {errors[0].evalue}"

    # figures: each slug saved by the notebook exists in both formats
    slugs = SAVE.findall(src.read_text(encoding="utf-8"))
    assert slugs, f"{stem} saves no figure"
    fig_dir = paths.figures_root("smoke") / stem
    for slug in slugs:
        for ext in ("png", "pdf"):
            f = fig_dir / f"{slug}.{ext}"
            assert f.is_file() and f.stat().st_size > 0, f"missing figure {f}"
    assert fig_dir.is_relative_to(paths.BUILD)  # below the test's build root, not the repository's

    # results: summary.json schema (list of records per configuration and metric)
    if stem in EXPERIMENTS:
        summary = json.loads((paths.results_root("smoke") / stem / "summary.json").read_text())
        assert isinstance(summary, list) and summary
        for rec in summary:
            for key, typ in SUMMARY_KEYS.items():
                assert key in rec, f"summary record lacks {key!r}: {rec}"
                assert isinstance(rec[key], typ), f"{key}={rec[key]!r} in {rec}"
            assert rec["n_seeds"] >= 1
            if rec["mean"] is not None and rec["ci_low"] is not None:
                assert rec["ci_low"] <= rec["mean"] + 1e-12 and rec["mean"] <= rec["ci_high"] + 1e-12
        metrics = {r["metric"] for r in summary}
        assert {"valid_bpc", "test_bpc"} <= metrics
        assert all(math.isfinite(r["mean"]) for r in summary if r["metric"] == "valid_bpc")

    # timings recorded
    timings = json.loads((paths.BUILD / "smoke" / "timings.json").read_text())
    assert timings[stem]["status"] == "ok"
    if timings[stem]["seconds"] > SMOKE_BUDGET_S:
        warnings.warn(f"{stem} took {timings[stem]['seconds']} s in smoke mode (budget {SMOKE_BUDGET_S} s)",
                      stacklevel=1)
