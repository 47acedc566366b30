"""The notebook runner and the rules every notebook follows (fast; no notebook is executed here
except a three-cell one that checks how a failing cell is reported).

Rules: one `parameters` cell of literals (VIEW="committed", SEED, DEVICE);
`nl.notebook.setup("<stem>", view=VIEW, ...)` names the file's own stem; no model classes,
optimizers, functions, seeding, literal paths or `open(` in code cells; code cells of at most 15
lines (a from-scratch cell computes a mechanism by hand in plain torch within that). The
committed `.ipynb` beside each `.py` holds the committed view's outputs (tests/test_notebooks.py).
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap

import pytest

from nlcore import paths
from nlcore.report import runner

NOTEBOOKS = runner.discover()
IDS = [p.stem for p in NOTEBOOKS]
FORBIDDEN = re.compile(r"torch\.optim|^class |manual_seed|open\(|sys\.path|^\s*%cd\b|^\s*!", re.M)
LITERAL_PATH = re.compile(r"""["'](?:\.{0,2}/|[A-Za-z]:\\)|["'][^"'\s]*/[^"'\s]*\.(?:csv|json|jsonl|png|pdf|pt|txt)["']""")
MAX_CELL_LINES = 15


def _code_cells(src):
    return [c for c in runner.read_notebook(src).cells if c.cell_type == "code"]


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks matching {runner.NOTEBOOK_GLOB} in {paths.NOTEBOOKS}"
    assert [p.stem for p in NOTEBOOKS] == sorted(p.stem for p in NOTEBOOKS)


# ---------------------------------------------------------------------------- notebook rules


@pytest.mark.parametrize("src", NOTEBOOKS, ids=IDS)
def test_one_parameters_cell_of_literals_defaulting_to_the_committed_view(src):
    nb = runner.read_notebook(src)
    index, params = runner.parameters_cell(nb, src.name)
    assert {"VIEW", "SEED", "DEVICE"} <= set(params), params
    assert params["VIEW"] == "committed"
    assert params["DEVICE"] == "auto"
    assert isinstance(params["SEED"], int) and not isinstance(params["SEED"], bool)
    assert nb.cells[index].cell_type == "code"
    assert index == 1, "the parameters cell comes right after the title cell"


@pytest.mark.parametrize("src", NOTEBOOKS, ids=IDS)
def test_title_cell(src):
    first = runner.read_notebook(src).cells[0]
    assert first.cell_type == "markdown"
    assert re.match(rf"# {src.stem[:2]} · \S", first.source), first.source.splitlines()[0]
    assert re.search(r"^> \S", first.source, re.M), "the title cell needs a blockquote (the question)"


@pytest.mark.parametrize("src", NOTEBOOKS, ids=IDS)
def test_setup_names_the_files_stem(src):
    text = "\n".join(c.source for c in _code_cells(src))
    stems = re.findall(r"""nl\.notebook\.setup\(\s*["']([^"']+)["']""", text)
    assert stems == [src.stem], f"setup() must be called once with {src.stem!r}, found {stems}"
    assert "view=VIEW" in text


@pytest.mark.parametrize("src", NOTEBOOKS, ids=IDS)
def test_no_forbidden_code(src):
    for i, cell in enumerate(_code_cells(src)):
        hit = FORBIDDEN.search(cell.source)
        assert hit is None, f"{src.name} code cell {i}: forbidden {hit.group(0)!r} in:\n{cell.source}"
        path = LITERAL_PATH.search(cell.source)
        assert path is None, f"{src.name} code cell {i}: literal path {path.group(0)!r}"


@pytest.mark.parametrize("src", NOTEBOOKS, ids=IDS)
def test_body_cells_are_short(src):
    for cell in _code_cells(src):
        n = len([ln for ln in cell.source.splitlines() if ln.strip()])
        assert n <= MAX_CELL_LINES, f"{src.name}: a code cell of {n} lines:\n{cell.source}"


# ---------------------------------------------------------------------------- discovery and CLI


def test_discover_only():
    picked = runner.discover(only=NOTEBOOKS[0].stem[:2])
    assert picked == [NOTEBOOKS[0]]
    assert runner.discover(only=NOTEBOOKS[0].stem) == [NOTEBOOKS[0]]
    with pytest.raises(runner.NotebookError, match="no notebook matches"):
        runner.discover(only="98")


def test_cli_views():
    from nlcore.cli import build_parser

    args = build_parser().parse_args(["notebooks", "--view", "committed", "--only", "01", "--publish", "--write-ipynb"])
    assert (args.view, args.only, args.publish, args.write_ipynb) == ("committed", "01", True, True)
    assert build_parser().parse_args(["notebooks"]).view == "committed"
    assert runner.run_notebooks("smoke", publish=True) == 2  # publishing is for the committed view


def test_kernel_env(tmp_path):
    env = runner.kernel_env("smoke")
    assert env["MPLBACKEND"] == "Agg" and env["PYTHONHASHSEED"] == "0"
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and env["OMP_NUM_THREADS"] == "1"
    assert env["NLCORE_BUILD"] == str(paths.BUILD) == str(tmp_path / "build")  # conftest's patched root
    assert "OMP_NUM_THREADS" not in runner.kernel_env("full")
    assert runner.kernel_env("committed", publish=True)["NLCORE_PUBLISH"] == "1"


def test_environ_is_restored(monkeypatch):
    monkeypatch.delenv("NLCORE_TEST_VAR", raising=False)
    import os

    with runner._environ({"NLCORE_TEST_VAR": "1"}):
        assert os.environ["NLCORE_TEST_VAR"] == "1"
    assert "NLCORE_TEST_VAR" not in os.environ


# ---------------------------------------------------------------------------- tiny notebooks


def _tiny(tmp_path, body: str, name: str = "99_tiny.py"):
    folder = tmp_path / "nbs"
    folder.mkdir(exist_ok=True)
    src = folder / name
    src.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return src


TINY = """
    # %% [markdown]
    # # 99 · Tiny
    # > a question

    # %% tags=["parameters"]
    VIEW = "committed"  # committed | smoke | full
    SEED = 0

    # %%
    assert VIEW == "smoke"
    x = 1

    # %%
    y = x / 0  # the failing cell
    z = 2
"""


def test_unknown_parameter_is_an_error(tmp_path, capsys):
    src = _tiny(tmp_path, TINY)
    with pytest.raises(runner.NotebookError, match=r"unknown parameter\(s\) \['NOPE'\].*declares \['SEED', 'VIEW'\]"):
        runner.run_notebook(src, "smoke", {"NOPE": 1})
    rc = runner.run_notebooks("smoke", only="99", notebooks_dir=src.parent, parameters={"NOPE": 1}, verbose=False)
    err = capsys.readouterr().err
    assert rc != 0 and "99_tiny.py" in err and "NOPE" in err


def test_parameter_of_another_type_is_an_error(tmp_path):
    src = _tiny(tmp_path, TINY)
    with pytest.raises(runner.NotebookError, match="SEED='yes' is a str"):
        runner.run_notebook(src, "smoke", {"SEED": "yes"})


@pytest.mark.parametrize("cell, message", [
    ('VIEW = "committed"\nSTEPS = 10 * 2\n', "must be a literal"),
    ('VIEW = "committed"\nprint(VIEW)\n', "only `NAME = literal`"),
])
def test_parameters_cell_must_hold_literals(tmp_path, cell, message):
    body = '# %% [markdown]\n# # 99 · Tiny\n\n# %% tags=["parameters"]\n' + cell
    src = _tiny(tmp_path, body)
    with pytest.raises(runner.NotebookError, match=re.escape(message)):
        runner.parameters_cell(runner.read_notebook(src), src.name)


def test_exactly_one_parameters_cell(tmp_path):
    body = '# %% tags=["parameters"]\nVIEW = "committed"\n\n# %% tags=["parameters"]\nSEED = 0\n'
    src = _tiny(tmp_path, body)
    with pytest.raises(runner.NotebookError, match="exactly one cell tagged 'parameters', found 2"):
        runner.parameters_cell(runner.read_notebook(src), src.name)


def test_failing_cell_is_reported_by_notebook_and_cell(tmp_path, capsys):
    src = _tiny(tmp_path, TINY)
    (paths.figures_root("smoke") / "99_tiny").mkdir(parents=True)
    (paths.figures_root("smoke") / "99_tiny" / "stale.png").write_bytes(b"old")
    rc = runner.run_notebooks("smoke", only="99", notebooks_dir=src.parent, verbose=False)
    err = capsys.readouterr().err
    assert rc == 1
    # cell 3 of the .py notebook (0: title, 1: parameters, 2: assert, 3: the division)
    assert "99_tiny.py" in err and "cell 3" in err and "y = x / 0" in err and "ZeroDivisionError" in err, err
    assert "99_tiny.py:13" in err, err  # the line of the cell's `# %%` marker
    executed = paths.BUILD / "executed" / "smoke" / "99_tiny.ipynb"
    assert executed.is_file(), "the failed notebook stays in build/ for inspection"
    assert not (paths.figures_root("smoke") / "99_tiny").exists(), "the figure dir is cleared before a run"
    timings = json.loads((paths.BUILD / "smoke" / "timings.json").read_text())
    assert timings["99_tiny"]["status"] == "failed"
    # the injected VIEW reached the kernel (cell 2 asserted it before the failure)
    with pytest.raises(runner.NotebookError) as info:
        runner.run_notebook(src, "smoke")
    assert (info.value.notebook, info.value.cell_index, info.value.first_line) == ("99_tiny", 3, "y = x / 0  # the failing cell")


def test_clear_outputs_never_touches_committed_results(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "repo")
    committed = paths.results_root("full") / "99_tiny"
    committed.mkdir(parents=True)
    (paths.figures_root("full") / "99_tiny").mkdir(parents=True)
    smoke = paths.results_root("smoke") / "99_tiny"
    smoke.mkdir(parents=True)
    runner.clear_outputs("99_tiny", "full")
    runner.clear_outputs("99_tiny", "smoke")
    assert committed.is_dir() and not (paths.figures_root("full") / "99_tiny").exists() and not smoke.exists()
    with pytest.raises(ValueError):
        runner.clear_outputs("..", "smoke")
    shutil.rmtree(tmp_path / "repo")


# ---------------------------------------------------------------------------- schedule helpers


@pytest.mark.parametrize("steps, chunk, partial", [(60, 16, "flush"), (60, 16, "discard"), (64, 16, "flush"),
                                                   (7, 1, "flush"), (5, 8, "flush")])
def test_timeline_counts_match_expected_updates(steps, chunk, partial):
    from nlcore.report.figures import update_steps
    from nlcore.report.notebook import expected_updates

    hits, flushed = update_steps({"fast": 1, "slow": chunk}, steps, partial)["slow"]
    assert hits == list(range(chunk, steps + 1, chunk))
    assert len(hits) + int(flushed) == expected_updates(steps, chunk, partial)
    assert expected_updates(steps, chunk, partial, optimizer="none") == 0


# ---------------------------------------------------------------------------- README blocks


def test_readme_tables_regenerates_and_checks(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_tables", paths.REPO_ROOT / "scripts" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n" + "".join(f"<!-- {b}:start -->\nstale\n<!-- {b}:end -->\n"
                                        for b in ("notebooks", "gallery", "results")))
    (tmp_path / "build" / "smoke").mkdir(parents=True)
    (tmp_path / "build" / "smoke" / "timings.json").write_text(json.dumps(
        {NOTEBOOKS[0].stem: {"seconds": 19.4, "status": "ok", "reuse": False}}))
    assert mod.main(["--readme", str(readme), "--check"]) == 1
    assert mod.main(["--readme", str(readme), "--build", str(tmp_path / "build")]) == 0
    text = readme.read_text()
    assert "stale" not in text and f"(notebooks/{NOTEBOOKS[0].stem}.ipynb)" in text and "| 19 s |" in text
    assert mod.main(["--readme", str(readme), "--check"]) == 0  # runtimes kept from the README itself
    (tmp_path / "build" / "smoke" / "timings.json").unlink()
    assert mod.main(["--readme", str(readme), "--build", str(tmp_path / "build")]) == 0
    assert "| 19 s |" in readme.read_text(), "a measured runtime survives a regeneration without timings"


def test_series_time_sums_every_notebook_and_keeps_the_file_value_without_timings(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_tables", paths.REPO_ROOT / "scripts" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- series_time:start -->\nstale\n<!-- series_time:end -->\n")
    build = tmp_path / "build"
    for view, each in (("committed", 5.0), ("smoke", 12.0)):
        (build / view).mkdir(parents=True)
        (build / view / "timings.json").write_text(json.dumps(
            {p.stem: {"seconds": each, "status": "ok"} for p in NOTEBOOKS}))
    assert mod.main(["--readme", str(readme), "--build", str(build)]) == 0
    n = len(NOTEBOOKS)
    want = (f"runs in {mod._duration(5.0 * n)} in the committed view (`make figures`) and "
            f"{mod._duration(12.0 * n)} in the smoke view")
    assert want in readme.read_text()
    (build / "smoke" / "timings.json").write_text(json.dumps({NOTEBOOKS[0].stem: {"seconds": 1.0, "status": "ok"}}))
    assert mod.main(["--readme", str(readme), "--build", str(build)]) == 0  # a partial run measures nothing
    assert want in readme.read_text()
    assert mod.main(["--readme", str(readme), "--check"]) == 0


def test_normalise_merges_split_stream_outputs():
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('a'); print('b')")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="a\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="b\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="w\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="c\n")]
    nb.cells = [cell]
    out = runner.normalise(nb, "01_x").cells[0].outputs
    assert [(o.name, o.text) for o in out] == [("stdout", "a\nb\n"), ("stderr", "w\n"), ("stdout", "c\n")]
