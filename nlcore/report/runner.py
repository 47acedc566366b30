"""The one caller of papermill: execute the numbered notebooks headless, in smoke or full mode.

`python -m nlcore notebooks --mode smoke|full [--only NN] [--reuse]` (and `make smoke`,
`make figures`) end here. The notebooks are committed only as jupytext `py:percent` files
`notebooks/NN_name.py`; for each one, in order, the runner

1. converts it with `jupytext.read()` and sets the kernelspec (`python3`);
2. checks the parameters it passes against the notebook's one `parameters`-tagged cell: an
   unknown name (or a value of another type than the default) is an error, not papermill's
   warning;
3. clears the notebook's figure folder for the mode (and, in smoke mode without `--reuse`, its
   smoke results, so a smoke run always exercises the current code instead of old runs);
4. sets the environment before the kernel starts (`MPLBACKEND=Agg`, `PYTHONHASHSEED=0`,
   `CUBLAS_WORKSPACE_CONFIG=:4096:8`, one OpenMP thread in smoke, and `NLCORE_BUILD` so the
   kernel writes below the same build root as this process);
5. runs `papermill.execute_notebook(..., parameters={"MODE": mode}, kernel_name="python3",
   cwd=<repo root>)` into `build/executed/<mode>/<stem>.ipynb`;
6. records its duration in `build/<mode>/timings.json`.

A failure stops the run with a non-zero exit and a message naming the notebook and the cell
(its index in the `.py` notebook, its `In [n]` and first source line); the failed notebook stays
in `build/executed/<mode>/` for inspection. FULL mode passes `MODE="full"` only; the notebook then
trains whatever is missing from `results/`. `--reuse` adds `REUSE_RESULTS=True`: the notebook
re-plots the committed results without training (`make figures` on a machine without a GPU).
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

NOTEBOOK_GLOB = "[0-9][0-9]_*.py"
STEM = re.compile(r"[0-9]{2}_[a-z0-9_]+")
PARAMETERS_TAG = "parameters"
KERNEL_NAME = "python3"
KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"}
CELL_TIMEOUT_S = {"smoke": 600, "full": None}  # per cell; None: no limit

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
    mode: str
    seconds: float
    output: Path
    parameters: dict


# ---------------------------------------------------------------------------- discovery


def discover(only: str | None = None, notebooks_dir: str | os.PathLike | None = None) -> list[Path]:
    """The notebooks `notebooks/NN_name.py`, in order; `only` ("01" or "01_cms") selects one."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else paths.NOTEBOOKS
    found = sorted(p for p in folder.glob(NOTEBOOK_GLOB) if STEM.fullmatch(p.stem))
    if only is None:
        return found
    key = str(only).strip()
    picked = [p for p in found if p.stem == key or p.stem.split("_", 1)[0] == key.zfill(2)]
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


def kernel_env(mode: str) -> dict[str, str]:
    """Variables set before the kernel starts (it inherits this process's environment)."""
    env = {
        "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "NLCORE_BUILD": str(paths.BUILD),  # the kernel writes below this process's build root
    }
    if mode == "smoke":  # one thread per kernel: two 2-thread processes on 2 cores crawl
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


def clear_outputs(stem: str, mode: str, results: bool = True) -> None:
    """Remove the notebook's figure folder for `mode`, and in smoke mode (with `results`) its
    smoke results; the committed results/ are never removed."""
    if not STEM.fullmatch(stem):
        raise ValueError(f"not a notebook stem: {stem!r}")
    folders = [paths.figures_root(mode) / stem]
    if mode == "smoke" and results:  # never the committed results/
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


def run_notebook(src: str | os.PathLike, mode: str, parameters: Mapping | None = None, *,
                 log_output: bool = False, cell_timeout: int | None = None) -> NotebookRun:
    """Execute one notebook; return its timing, or raise NotebookError naming the failing cell."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    paths.check_mode(mode)
    src = Path(src)
    stem = src.stem
    params = {"MODE": mode, **dict(parameters or {})}
    nb = read_notebook(src)
    check_parameters(nb, params, name=str(src.name))
    p_index, _ = parameters_cell(nb, str(src.name))
    out = paths.BUILD / "executed" / mode / f"{stem}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    clear_outputs(stem, mode, results=not params.get("REUSE_RESULTS", False))
    timeout = cell_timeout if cell_timeout is not None else CELL_TIMEOUT_S[mode]
    t0 = time.perf_counter()
    try:
        with _environ(kernel_env(mode)):
            executed = pm.execute_notebook(
                nb, str(out), parameters=params, kernel_name=KERNEL_NAME, language="python",
                cwd=str(paths.REPO_ROOT), log_output=log_output, progress_bar=False,
                execution_timeout=timeout,
            )
    except PapermillExecutionError as e:
        # papermill inserted its injected-parameters cell right after the parameters cell
        index = e.cell_index - 1 if e.cell_index > p_index else e.cell_index
        first = _first_line(e.source)
        line = _cell_line(src, len(nb.cells), index)
        where = f"{src.name}:{line}" if line else src.name
        raise NotebookError(
            f"notebook {src.name} failed in cell {index} (counted from 0, markdown included; {where}; "
            f"In [{e.exec_count}]) starting {first!r}:\n  {e.ename}: {e.evalue}\n"
            f"  executed notebook kept at {out}",
            notebook=stem, cell_index=index, first_line=first, output=out) from None
    except Exception as e:  # kernel died, timed out, could not start, ...
        raise NotebookError(f"notebook {src.name} did not run: {type(e).__name__}: {e}\n"
                            f"  partial notebook (if any) at {out}", notebook=stem, output=out) from e
    seconds = executed.metadata.get("papermill", {}).get("duration") or (time.perf_counter() - t0)
    return NotebookRun(stem, mode, float(seconds), out, params)


def _record_timing(mode: str, stem: str, entry: dict) -> None:
    from nlcore import results

    path = paths.BUILD / mode / "timings.json"
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


def run_notebooks(mode: str, only: str | None = None, *, reuse: bool = False,
                  parameters: Mapping | None = None, notebooks_dir: str | os.PathLike | None = None,
                  verbose: bool = False) -> int:
    """Run every notebook (or `only` one) in `mode`; 0 if all succeeded, else 1 (2: bad request).

    `reuse` passes REUSE_RESULTS=True (re-plot committed results, no training). `parameters`
    adds more (each must be declared by every selected notebook).
    """
    from nlcore.repro import utc_now

    paths.check_mode(mode)
    try:
        notebooks = discover(only, notebooks_dir)
    except NotebookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not notebooks:
        print(f"error: no notebooks matching {NOTEBOOK_GLOB} in {notebooks_dir or paths.NOTEBOOKS}",
              file=sys.stderr)
        return 2
    params = dict(parameters or {})
    if reuse:
        params["REUSE_RESULTS"] = True
    if mode == "full" and not reuse:
        import torch

        if not torch.cuda.is_available():
            print("note: full mode without --reuse on a machine without CUDA trains whatever is missing "
                  "from results/ on the CPU; pass --reuse to re-plot the committed results only", flush=True)
    _setup_logging(verbose)
    total = time.perf_counter()
    for src in notebooks:
        print(f"[notebooks:{mode}] {src.stem} ...", flush=True)
        t0 = time.perf_counter()
        try:
            run = run_notebook(src, mode, params, log_output=verbose)
        except NotebookError as e:
            _record_timing(mode, src.stem, {"seconds": round(time.perf_counter() - t0, 1), "status": "failed",
                                            "reuse": reuse, "utc_time": utc_now()})
            print(f"FAILED: {e}", file=sys.stderr, flush=True)
            return 1
        _record_timing(mode, run.stem, {"seconds": round(run.seconds, 1), "status": "ok", "reuse": reuse,
                                        "utc_time": utc_now()})
        print(f"[notebooks:{mode}] {run.stem} ok in {run.seconds:.1f} s -> {run.output}", flush=True)
    print(f"[notebooks:{mode}] {len(notebooks)} notebook(s) ok in {time.perf_counter() - total:.1f} s "
          f"(timings: {paths.BUILD / mode / 'timings.json'})", flush=True)
    return 0
