"""Every notebook executes in the committed view and in the smoke view, and what a reader sees is
what the repository holds.

Per notebook and view (through the runner, papermill in-process, one kernel each):
- every code cell ran and none printed an error;
- every figure shown is byte for byte a figure the run saved, and every saved figure is shown
  exactly once (`Context.show`); images inside widgets are the widgets' own;
- every number in the takeaways was rendered by a `Quote` and equals the committed file it cites;
- the committed view re-creates the committed `notebooks/<stem>.ipynb` exactly (run `make
  notebooks` after changing a notebook or the results it reads);
- the committed view runs within 30 s and the smoke view within 2 min on a 2-core CPU (a warning
  above that, a failure above twice that).

The unmarked tests check without a kernel that each `.py` and its `.ipynb` hold the same cells.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import warnings
from pathlib import Path

import nbformat
import pytest

from nlcore import paths
from nlcore.report import runner

NOTEBOOKS = runner.discover()
BUDGET_S = {"committed": 30, "smoke": 120}
RESULT_NUMBER = re.compile(r"(?<![\w.])\d\.\d{3,}(?![\w.])")  # a bpc-like number: 1.698



def _at(report: dict, path) -> object:
    """The value of a nested report at a key path."""
    return functools.reduce(lambda v, k: v[k], path, report)

def executed(stem: str, view: str):
    return nbformat.read(paths.BUILD / "executed" / view / f"{stem}.ipynb", as_version=4)


def shown_images(nb) -> list[bytes]:
    """PNG outputs a reader sees as figures (not the default-state picture inside a widget)."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if "image/png" in data and "application/vnd.jupyter.widget-view+json" not in data:
                out.append(base64.b64decode(data["image/png"]))
    return out


def check_display(nb, fig_dir: Path) -> None:
    saved = {p.name: p.read_bytes() for p in sorted(fig_dir.glob("*.png"))} if fig_dir.is_dir() else {}
    shown = shown_images(nb)
    for name, png in saved.items():
        n = sum(img == png for img in shown)
        assert n == 1, f"figure {name} is shown {n} times (show each saved figure once: ctx.show(fig, slug))"
    stray = [i for i, img in enumerate(shown) if img not in saved.values()]
    assert not stray, f"{len(stray)} image(s) shown that the notebook did not save (draw figures with ctx.show)"


def check_quotes(stem: str) -> None:
    path = paths.BUILD / "cited" / f"{stem}.json"
    assert path.is_file(), f"{stem} shows no takeaways (nl.notebook.takeaways)"
    ledger = json.loads(path.read_text())
    texts = " ".join(e["text"] for e in ledger["entries"])
    for e in ledger["entries"]:
        if e["field"] in ("mean", "ci"):
            records = json.loads((paths.REPO_ROOT / e["file"]).read_text())
            (rec,) = [r for r in records if r.get("config") == e["config"] and r.get("metric") == e["metric"]
                      and all(r.get(k) == v for k, v in e["keys"].items())]
            want = rec["mean"] if e["field"] == "mean" else [rec["mean"], rec["ci_low"], rec["ci_high"], rec["n_seeds"]]
            got = e["value"]
            assert json.dumps(got) == json.dumps(want), f"{e['text']} does not match {e['file']}"
        elif e["field"] in ("bench", "derived") and "path" in e["keys"]:  # a benchmark report's value
            report = json.loads((paths.REPO_ROOT / e["file"]).read_text())
            path = e["keys"]["path"]
            want = (_at(report, path) if e["field"] == "bench"
                    else _at(report, path[0]) / _at(report, path[1]))
            assert e["value"] == want, f"{e['text']} does not match {e['file']} at {path}"
    for md in ledger["markdown"]:
        for num in RESULT_NUMBER.findall(md):
            assert num in texts, f"{stem}: the takeaway number {num} was typed, not quoted from results"


def cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.notebooks
@pytest.mark.parametrize("view", ["committed", "smoke"])
@pytest.mark.parametrize("src", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_shows_what_it_saves(src, view, capsys):
    stem = src.stem
    rc = runner.run_notebooks(view, only=stem)
    err = capsys.readouterr().err
    assert rc == 0, f"runner failed for {stem} ({view}):\n{err[-3000:]}"
    nb = executed(stem, view)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "a code cell did not run"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"error output in {stem}: {errors[0].ename}: {errors[0].evalue}"
    fig_dir = paths.view_roots(view)[1] / stem
    assert fig_dir.is_relative_to(paths.BUILD)  # never the tracked figures/
    check_display(nb, fig_dir)
    check_quotes(stem)
    if view == "committed":
        committed = nbformat.read(paths.NOTEBOOKS / f"{stem}.ipynb", as_version=4)
        again = runner.normalise(nb, stem)
        assert nbformat.writes(again) == nbformat.writes(committed), \
            f"notebooks/{stem}.ipynb differs from a fresh execution: run `make notebooks`"
    seconds = json.loads((paths.BUILD / view / "timings.json").read_text())[stem]["seconds"]
    if seconds > BUDGET_S[view]:
        assert seconds <= 2 * BUDGET_S[view], f"{stem} took {seconds} s in the {view} view"
        warnings.warn(f"{stem} took {seconds} s in the {view} view (budget {BUDGET_S[view]} s)", stacklevel=1)


@pytest.mark.parametrize("src", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_py_and_ipynb_are_paired(src):
    ipynb = src.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{ipynb.name} is missing: run `make notebooks`"
    assert cells(runner.read_notebook(src)) == cells(nbformat.read(ipynb, as_version=4)), \
        f"{src.name} and {ipynb.name} differ: run `make notebooks` (or save the notebook in JupyterLab)"
    assert "ipynb,py:percent" in src.read_text(encoding="utf-8").split("# ---", 2)[1], "not paired by jupytext"


@pytest.mark.parametrize("src", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_result_is_typed_into_markdown(src):
    nb = runner.read_notebook(src)
    for c in nb.cells:
        if c.cell_type == "markdown":
            text = re.sub(r"\$[^$]*\$", "", c.source)  # equations may hold constants
            typed = RESULT_NUMBER.findall(text)
            assert not typed, f"{src.name}: {typed} typed into markdown; quote results with nl.notebook.Quote"


def test_parameters_are_literal_views():
    for src in NOTEBOOKS:
        _, params = runner.parameters_cell(runner.read_notebook(src), src.name)
        assert params.get("VIEW") == "committed", f"{src.name}: VIEW must default to 'committed'"
        assert "MODE" not in params and "REUSE_RESULTS" not in params



DRAFTS = runner.discover(notebooks_dir=paths.NOTEBOOKS / "drafts")


@pytest.mark.notebooks
@pytest.mark.parametrize("src", DRAFTS, ids=[p.stem for p in DRAFTS])
def test_draft_runs_in_the_smoke_view(src, capsys):
    """A draft (a notebook waiting for its full results) runs its whole pipeline small and shows
    every figure it saves; it has no committed view until its results are committed."""
    rc = runner.run_notebooks("smoke", only=src.stem, notebooks_dir=src.parent)
    assert rc == 0, f"runner failed for draft {src.stem}:\n{capsys.readouterr().err[-3000:]}"
    nb = executed(src.stem, "smoke")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"error output in {src.stem}: {errors[0].ename}: {errors[0].evalue}"
    check_display(nb, paths.view_roots("smoke")[1] / src.stem)
