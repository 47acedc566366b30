"""Absolute repository paths, and where each mode and notebook view reads and writes.

Experiments run in a mode: FULL writes the committed `results/` and `figures/`, SMOKE writes
under `build/smoke/`, so a smoke run (CI included) can never overwrite a committed artefact.
Notebooks run in a view: "committed" reads the committed `results/` and draws its figures into
`build/committed/figures/` (into `figures/` only when $NLCORE_PUBLISH=1: `make figures`),
"smoke" and "full" are the modes.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO_ROOT / "notebooks"
# $NLCORE_BUILD moves build/ (the notebook runner passes its build root to the kernel this way,
# so a test's temporary root reaches the separate kernel process); it never moves figures/ or results/.
BUILD = Path(os.environ["NLCORE_BUILD"]).resolve() if os.environ.get("NLCORE_BUILD") else REPO_ROOT / "build"

MODES = ("smoke", "full")
VIEWS = ("committed", "smoke", "full")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def figures_root(mode: str) -> Path:
    """Where figures of `mode` go: `figures/` (full) or `build/smoke/figures/` (smoke)."""
    return REPO_ROOT / "figures" if check_mode(mode) == "full" else BUILD / "smoke" / "figures"


def results_root(mode: str) -> Path:
    """Where tidy results of `mode` go: `results/` (full) or `build/smoke/results/` (smoke)."""
    return REPO_ROOT / "results" if check_mode(mode) == "full" else BUILD / "smoke" / "results"


def check_view(view: str) -> str:
    if view not in VIEWS:
        raise ValueError(f"VIEW must be one of {VIEWS}, got {view!r}")
    return view


def publishing() -> bool:
    """Whether the committed view writes its figures into the tracked `figures/` ($NLCORE_PUBLISH=1)."""
    return os.environ.get("NLCORE_PUBLISH", "").strip() not in ("", "0")


def view_roots(view: str) -> tuple[Path, Path]:
    """(results root, figures root) of a notebook view."""
    if check_view(view) == "committed":
        return REPO_ROOT / "results", (REPO_ROOT / "figures" if publishing() else BUILD / "committed" / "figures")
    return results_root(view), figures_root(view)


def data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The local data root: the explicit argument, else $NLCORE_DATA, else None."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("NLCORE_DATA")
    return Path(env).expanduser() if env else None
