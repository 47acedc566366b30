"""Absolute repository paths and the mode → output-root rule.

Only `results`, `plotting` and the checkpoint code write to disk, and always below the roots
named here: FULL mode writes the committed `figures/` and `results/`, SMOKE mode writes under
`build/smoke/`, so a smoke run (CI included) can never overwrite a committed artefact.
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


def data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """The local data root: the explicit argument, else $NLCORE_DATA, else None."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("NLCORE_DATA")
    return Path(env).expanduser() if env else None
