"""The one caller of papermill: execute the notebooks headless, in a view.

`python -m nlcore notebooks --view committed|smoke|full [--only NN] [--publish] [--write-ipynb]`
(and `make notebooks`, `make figures`, `make smoke`) end here. For each notebook
`notebooks/NN_name.py` (py:percent, the reviewed source), in order, the runner

1. reads it with jupytext and sets the kernelspec (`python3`);
2. checks the parameters it passes against the notebook's one `parameters`-tagged cell (an
   unknown name, or a value of another type than the default, is an error); the committed view
   passes none (it is every notebook's default), so no cell is injected;
3. clears the notebook's figure folder for the view (and, in smoke, its smoke results, so a
   smoke run always exercises the current code);
4. sets the environment before the kernel starts (`MPLBACKEND=Agg`, `PYTHONHASHSEED=0`,
   `CUBLAS_WORKSPACE_CONFIG=:4096:8`, one OpenMP thread on a CPU, `NLCORE_BUILD` so the kernel
   writes below the same build root, `NLCORE_PUBLISH` with `--publish`);
5. executes it into `build/executed/<view>/<stem>.ipynb` and records its duration in
   `build/<view>/timings.json`;
6. with `--write-ipynb`, writes the executed notebook, normalised (`normalise`: no timings or
   run metadata, execution counts 1, 2, ..., widget ids numbered in order), to
   `notebooks/<stem>.ipynb`: the rendered copy a reader opens, paired with the `.py` by jupytext.

A failure stops the run with a non-zero exit and a message naming the notebook and the cell
(its index in the `.py` notebook, its `In [n]` and first source line); the failed notebook stays
in `build/executed/<view>/` for inspection.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from nlcore import paths

NOTEBOOK_GLOB = "[0-9A-Z][0-9]_*.py"  # 00_orientation ... 06_hope_titans, then appendices A1_...
STEM = re.compile(r"[0-9A-Z][0-9]_[a-z0-9_]+")
PARAMETERS_TAG = "parameters"
KERNEL_NAME = "python3"
KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"}
CELL_TIMEOUT_S = {"committed": 300, "smoke": 600, "full": None}  # per cell; None: no limit
JUPYTEXT_FORMATS = "ipynb,py:percent"

log = logging.getLogger("nlcore.report.runner")


class NotebookError(RuntimeError):
    """A notebook that could not be run, or that failed; the message names notebook and cell."""

    def __init__(self, message: str, *, notebook: str, cell_index: int | None = None,
                 first_line: str | None = None, output: Path | None = None) -> None:
        super().__init__(message)
        self.notebook = notebook
        self.cell_index = cell_index
        self.first_line = first_line
        self.output = output


@dataclass(frozen=True)
class NotebookRun:
    stem: str
    view: str
    seconds: float
    output: Path
    parameters: dict


# ---------------------------------------------------------------------------- discovery


def discover(only: str | None = None, notebooks_dir: str | os.PathLike | None = None) -> list[Path]:
    """The notebooks `notebooks/NN_name.py`, in order; `only` ("01", "A1" or "01_cms") selects one."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else paths.NOTEBOOKS
    found = sorted(p for p in folder.glob(NOTEBOOK_GLOB) if STEM.fullmatch(p.stem))
    if only is None:
        return found
    key = str(only).strip()
    picked = [p for p in found if p.stem == key or p.stem.split("_", 1)[0] == key.zfill(2).upper()]
    if not picked:
        names = ", ".join(p.stem for p in found) or "none"
        raise NotebookError(f"--only {only}: no notebook matches in {folder} (have: {names})",
                            notebook=str(only))
    return picked


def read_notebook(path: str | os.PathLike):
    """The `py:percent` notebook at `path` as an nbformat v4 node with the python3 kernelspec."""
    import jupytext

    path = Path(path)
    nb = jupytext.read(path, fmt="py:percent")
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


# ---------------------------------------------------------------------------- parameters


def parameters_cell(nb, name: str = "notebook") -> tuple[int, dict]:
    """`(index, {NAME: default})` of the one cell tagged `parameters`.

    The cell may hold only `NAME = literal` lines (and comments): no derived values, no calls.
    Zero or several tagged cells, or anything else in the cell, is an error.
    """
    tagged = [i for i, c in enumerate(nb.cells) if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise NotebookError(f"{name}: needs exactly one cell tagged {PARAMETERS_TAG!r}, found {len(tagged)}",
                            notebook=name)
    index = tagged[0]
    cell = nb.cells[index]
    if cell.cell_type != "code":
        raise NotebookError(f"{name}: the {PARAMETERS_TAG!r} cell must be a code cell", notebook=name,
                            cell_index=index)
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as e:
        raise NotebookError(f"{name}: parameters cell does not parse: {e}", notebook=name, cell_index=index) from None
    values: dict = {}
    for node in tree.body:
        target = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target = node.target.id
        if target is None:
            raise NotebookError(f"{name}: parameters cell line {node.lineno}: only `NAME = literal` is allowed",
                                notebook=name, cell_index=index)
        try:
            values[target] = ast.literal_eval(node.value)
        except ValueError:
            raise NotebookError(f"{name}: parameter {target} (line {node.lineno}) must be a literal, "
                                f"not {ast.unparse(node.value)!r}", notebook=name, cell_index=index) from None
    return index, values


def check_parameters(nb, parameters: Mapping, name: str = "notebook") -> dict:
    """Raise NotebookError unless every passed parameter is declared (with a value of the
    default's type); return the declared defaults."""
    _, declared = parameters_cell(nb, name)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise NotebookError(f"{name}: unknown parameter(s) {unknown}; the parameters cell declares "
                            f"{sorted(declared)}", notebook=name)
    for key, value in parameters.items():
        default = declared[key]
        ok = type(value) is type(default) or (isinstance(default, float) and type(value) is int)
        if default is not None and not ok:
            raise NotebookError(f"{name}: parameter {key}={value!r} is a {type(value).__name__}, "
                                f"but its default {default!r} is a {type(default).__name__}", notebook=name)
    return declared


# ---------------------------------------------------------------------------- environment


def kernel_env(view: str, publish: bool = False) -> dict[str, str]:
    """Variables set before the kernel starts (it inherits this process's environment)."""
    env = {
        "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "NLCORE_BUILD": str(paths.BUILD),  # the kernel writes below this process's build root
        "NLCORE_PUBLISH": "1" if publish else "0",
    }
    if view != "full":  # one thread per kernel: two 2-thread processes on 2 cores crawl
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env.update({k: os.environ.get(k, "1") for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")})
    return env


@contextlib.contextmanager
def _environ(updates: Mapping[str, str]) -> Iterator[None]:
    """Set `updates` in os.environ for the duration (the kernel is started inside)."""
    saved = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def clear_outputs(stem: str, view: str, publish: bool = False) -> None:
    """Remove the notebook's figure folder for `view`, and in smoke its smoke results; the
    committed results/ are never removed."""
    if not STEM.fullmatch(stem):
        raise ValueError(f"not a notebook stem: {stem!r}")
    figures = paths.REPO_ROOT / "figures" if view == "full" or (view == "committed" and publish) else \
        paths.view_roots(view)[1] if view == "smoke" else paths.BUILD / "committed" / "figures"
    folders = [figures / stem]
    if view == "smoke":  # never the committed results/
        folders.append(paths.results_root("smoke") / stem)
    for folder in folders:
        if folder.is_dir():
            shutil.rmtree(folder)


# ---------------------------------------------------------------------------- running


def _cell_line(src: Path, n_cells: int, index: int) -> int | None:
    """1-based line of cell `index`'s `# %%` marker in the py:percent file (None if unsure)."""
    try:
        marks = [i + 1 for i, ln in enumerate(src.read_text(encoding="utf-8").splitlines())
                 if ln.startswith("# %%")]
    except OSError:
        return None
    return marks[index] if len(marks) == n_cells and 0 <= index < n_cells else None


def _first_line(source: str) -> str:
    return next((ln.strip() for ln in source.splitlines() if ln.strip()), "")


# the kernel logs errors only: its start-up warning about unencrypted local TCP says nothing about
# the notebook and would be the only line besides the runner's own
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


def run_notebook(src: str | os.PathLike, view: str, parameters: Mapping | None = None, *,
                 log_output: bool = False, cell_timeout: int | None = None, publish: bool = False,
                 write_ipynb: bool = False) -> NotebookRun:
    """Execute one notebook; return its timing, or raise NotebookError naming the failing cell."""
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    paths.check_view(view)
    src = Path(src)
    stem = src.stem
    params = dict(parameters or {})
    if view != "committed":
        params = {"VIEW": view, **params}
    nb = read_notebook(src)
    check_parameters(nb, params, name=str(src.name))
    p_index, _ = parameters_cell(nb, str(src.name))
    out = paths.BUILD / "executed" / view / f"{stem}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    clear_outputs(stem, view, publish)
    timeout = cell_timeout if cell_timeout is not None else CELL_TIMEOUT_S[view]
    t0 = time.perf_counter()
    try:
        with _environ(kernel_env(view, publish)):
            executed = pm.execute_notebook(
                nb, str(out), parameters=params, kernel_name=KERNEL_NAME, language="python",
                cwd=str(paths.REPO_ROOT), log_output=log_output, progress_bar=False,
                execution_timeout=timeout, extra_arguments=KERNEL_ARGS,
            )
    except PapermillExecutionError as e:
        # papermill inserted its injected-parameters cell right after the parameters cell
        index = e.cell_index - 1 if params and e.cell_index > p_index else e.cell_index
        first = _first_line(e.source)
        line = _cell_line(src, len(nb.cells), index)
        where = f"{src.name}:{line}" if line else src.name
        raise NotebookError(
            f"notebook {src.name} failed in cell {index} (counted from 0, markdown included; {where}; "
            f"In [{e.exec_count}]) starting {first!r}: {e.ename}: {e.evalue} "
            f"(executed notebook kept at {out})",
            notebook=stem, cell_index=index, first_line=first, output=out) from None
    except Exception as e:  # kernel died, timed out, could not start, ...
        raise NotebookError(f"notebook {src.name} did not run: {type(e).__name__}: {e} "
                            f"(partial notebook, if any, at {out})", notebook=stem, output=out) from e
    seconds = executed.metadata.get("papermill", {}).get("duration") or (time.perf_counter() - t0)
    if write_ipynb:
        nbformat.write(normalise(executed, stem), paths.NOTEBOOKS / f"{stem}.ipynb")
    return NotebookRun(stem, view, float(seconds), out, params)


_UUID = re.compile(r"[0-9a-f]{32}")


def _widget_order(nb) -> list[str]:
    """Widget model ids in an order that does not depend on the ids themselves: the widgets the
    outputs display, in cell order, then the models each references (its state's keys sorted,
    lists in order), breadth first; any left over by their name and state."""
    import json

    state = (nb.metadata.get("widgets") or {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    order: list[str] = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            view = o.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            if view and view.get("model_id") not in order:
                order.append(view["model_id"])
    i = 0
    while i < len(order):
        refs = _UUID.findall(json.dumps(state.get(order[i], {}).get("state", {}), sort_keys=True))
        order += [r for r in refs if r not in order]
        i += 1
    rest = sorted((m for m in state if m not in order),
                  key=lambda m: (state[m].get("model_name", ""), _UUID.sub("", json.dumps(state[m], sort_keys=True))))
    return order + rest


def _merge_streams(outputs: list) -> list:
    """Consecutive outputs on one stream as one output: how a kernel splits printed text into
    messages depends on timing, what a reader sees does not."""
    merged: list = []
    for o in outputs:
        prev = merged[-1] if merged else None
        if (o.get("output_type") == "stream" and prev is not None and prev.get("output_type") == "stream"
                and prev.get("name") == o.get("name")):
            prev["text"] = prev["text"] + o["text"]
        else:
            merged.append(o)
    return merged


def normalise(nb, stem: str):
    """The executed notebook as committed: its sources and outputs only, byte-stable across runs
    on unchanged results (no timings or run metadata; execution counts 1, 2, ...; cell ids from
    the stem and position; widget model ids numbered in order of appearance)."""
    import json

    import nbformat

    state = nb.metadata.get("widgets")
    nb.metadata = nbformat.from_dict({"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"},
                                      "jupytext": {"formats": JUPYTEXT_FORMATS}})
    if state:
        nb.metadata["widgets"] = state
    count = 0
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{stem.replace('_', '-')}-{i:02d}"
        tags = cell.get("metadata", {}).get("tags")
        cell["metadata"] = nbformat.from_dict({"tags": tags} if tags else {})
        if cell.cell_type == "code":
            count += 1
            cell["execution_count"] = count
            cell["outputs"] = _merge_streams(cell.get("outputs", []))
            for o in cell.get("outputs", []):
                if "execution_count" in o:
                    o["execution_count"] = count
                o.get("metadata", {}).pop("papermill", None)
    text = nbformat.writes(nb)
    ids: dict[str, str] = {}
    for uid in _widget_order(nb):  # widget model ids: random per run; number them in a fixed order
        ids.setdefault(uid, f"{len(ids) + 1:032x}")
    for uid, new in ids.items():
        text = text.replace(uid, new)
    return nbformat.reads(json.dumps(json.loads(text)), as_version=4)


def _record_timing(view: str, stem: str, entry: dict) -> None:
    from nlcore import results

    path = paths.BUILD / view / "timings.json"
    data = results.read_json(path) if path.exists() else {}
    data[stem] = entry
    results.write_json(path, data)


def _setup_logging(verbose: bool) -> None:
    pm_log = logging.getLogger("papermill")
    if verbose and not pm_log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        pm_log.addHandler(handler)
        pm_log.setLevel(logging.INFO)
        pm_log.propagate = False


def run_notebooks(view: str = "committed", only: str | None = None, *, parameters: Mapping | None = None,
                  notebooks_dir: str | os.PathLike | None = None, verbose: bool = False, publish: bool = False,
                  write_ipynb: bool = False) -> int:
    """Run every notebook (or `only` one) in `view`; 0 if all succeeded, else 1 (2: bad request).

    `publish` (committed view): write the figures into the tracked figures/; `write_ipynb`
    (committed view): write the normalised executed notebooks to notebooks/; `parameters` adds
    parameters (each must be declared by every selected notebook)."""
    from nlcore.repro import utc_now

    paths.check_view(view)
    if (publish or write_ipynb) and view != "committed":
        print("error: --publish and --write-ipynb apply to the committed view only", file=sys.stderr)
        return 2
    try:
        notebooks = discover(only, notebooks_dir)
    except NotebookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not notebooks:
        print(f"error: no notebooks matching {NOTEBOOK_GLOB} in {notebooks_dir or paths.NOTEBOOKS}",
              file=sys.stderr)
        return 2
    if view == "full":
        import torch

        if not torch.cuda.is_available():
            print("note: the full view trains whatever is missing from results/, here on the CPU; "
                  "the committed view re-plots the committed results", flush=True)
    _setup_logging(verbose)
    total = time.perf_counter()
    for src in notebooks:
        t0 = time.perf_counter()
        try:
            run = run_notebook(src, view, parameters, log_output=verbose, publish=publish, write_ipynb=write_ipynb)
        except NotebookError as e:
            _record_timing(view, src.stem, {"seconds": round(time.perf_counter() - t0, 1), "status": "failed",
                                            "utc_time": utc_now()})
            print(f"error: {e}", file=sys.stderr, flush=True)
            return 1
        _record_timing(view, run.stem, {"seconds": round(run.seconds, 1), "status": "ok", "utc_time": utc_now()})
        print(f"[notebooks:{view}] {run.stem} ok in {run.seconds:.1f} s", flush=True)
    print(f"[notebooks:{view}] {len(notebooks)} notebook(s) ok in {time.perf_counter() - total:.1f} s", flush=True)
    return 0
