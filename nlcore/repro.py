"""Reproducibility: seeding, determinism flags, device choice, environment and git capture.

Nothing here runs at import. Every function is called explicitly (by `notebook.setup`, the
training CLI or a test), so importing `nlcore` never touches a random number generator.

- `seed_everything(seed)` seeds Python's `random`, NumPy's global generator and torch (CPU and
  every CUDA device). Data generators should still take an explicit `torch.Generator`, so that
  the data do not depend on how many parameters were initialised before them.
- `set_determinism(on)` switches torch's deterministic algorithms and the cuDNN flags.
- `rng_state()` / `set_rng_state(state)` capture and restore every global RNG, for a bit-exact
  resume from a checkpoint. The state holds only tensors and plain Python values, so it
  survives `torch.save` / `torch.load(weights_only=True)`.
- `capture_environment()` and `git_info()` are the provenance written to `meta.json`.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import random
import re
import shlex
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from nlcore.paths import REPO_ROOT

_MAX_SEED = 2**32 - 1  # NumPy's legacy global generator accepts seeds in [0, 2**32)
_CUDA_SPEC = re.compile(r"cuda(?::(\d+))?")


# ---------------------------------------------------------------------------- seeding


def seed_everything(seed: int) -> None:
    """Seed `random`, NumPy's global generator and torch on the CPU and every CUDA device."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be in [0, {_MAX_SEED}], got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily, if CUDA is not yet up)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_determinism(on: bool, warn_only: bool = False) -> None:
    """Turn torch's deterministic algorithms (and deterministic cuDNN) on or off.

    On: `use_deterministic_algorithms(True)`, `cudnn.benchmark = False`,
    `cudnn.deterministic = True`, and `CUBLAS_WORKSPACE_CONFIG=:4096:8` unless already set
    (cuBLAS needs it for deterministic matmuls; the notebook runner sets it before the kernel
    starts, which is the safe place). With `warn_only=True` an op without a deterministic
    implementation warns instead of raising (the FULL presets use that).
    Off: torch's defaults (non-deterministic algorithms allowed, `cudnn.deterministic = False`);
    `cudnn.benchmark` stays False, as it is by default.
    """
    on = bool(on)
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=bool(warn_only))
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = on


# ---------------------------------------------------------------------------- RNG state


def rng_state() -> dict:
    """Every global RNG state: Python `random`, NumPy, torch CPU and each CUDA device.

    Only tensors and plain Python values (no NumPy arrays), so a checkpoint holding it loads
    with `torch.load(..., weights_only=True)`.
    """
    version, internal, gauss_next = random.getstate()
    np_state = np.random.get_state(legacy=False)  # dict: bit_generator, state{key,pos}, gauss
    return {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": [int(k) for k in np_state["state"]["key"]],
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore the states captured by `rng_state()`.

    Tensors may come back on any device (e.g. after `torch.load(map_location="cuda")`); they are
    moved to the CPU as torch requires. CUDA states are restored for the devices present; a
    mismatch in the number of devices (say, a GPU checkpoint resumed on a CPU) warns, since the
    resume is then not bit-exact.
    """
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    nps = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": nps["bit_generator"],
            "state": {"key": np.asarray(nps["key"], dtype=np.uint32), "pos": nps["pos"]},
            "has_gauss": nps["has_gauss"],
            "gauss": nps["gauss"],
        }
    )
    torch.set_rng_state(_cpu_byte_tensor(state["torch"]))
    cuda_states = list(state.get("cuda") or [])
    n_dev = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(cuda_states) != n_dev:
        warnings.warn(
            f"RNG state holds {len(cuda_states)} CUDA generator(s) but {n_dev} device(s) are "
            "present: CUDA random streams will not continue exactly",
            RuntimeWarning,
            stacklevel=2,
        )
    for index in range(min(len(cuda_states), n_dev)):
        torch.cuda.set_rng_state(_cpu_byte_tensor(cuda_states[index]), device=index)


def _cpu_byte_tensor(t) -> torch.Tensor:
    return torch.as_tensor(t).detach().to(device="cpu", dtype=torch.uint8)


# ---------------------------------------------------------------------------- devices


def pick_device(spec: str | torch.device = "auto") -> torch.device:
    """Resolve a device spec: "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:N".

    Asking for CUDA where there is none raises a RuntimeError that says so, instead of failing
    later inside the first `.to(device)`.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"device spec must be a str or torch.device, got {type(spec).__name__}")
    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA_SPEC.fullmatch(text)
    if match is None:
        raise ValueError(f"unknown device spec {spec!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise RuntimeError(
            f"device {spec!r} requested but CUDA is not available (torch {torch.__version__}, "
            f"{build}); use DEVICE='cpu' or 'auto'"
        )
    if match.group(1) is None:
        return torch.device("cuda")
    index = int(match.group(1))
    count = torch.cuda.device_count()
    if index >= count:
        raise RuntimeError(f"device {spec!r} requested but only {count} CUDA device(s) exist")
    return torch.device("cuda", index)


# ---------------------------------------------------------------------------- provenance


def utc_now() -> str:
    """The current UTC time, ISO 8601 with an explicit offset, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def capture_environment(device: str | torch.device | None = None) -> dict:
    """Versions and hardware that a result depends on (no host name, no user name, no paths).

    `device` is the device the run used; its GPU name is recorded when it is a CUDA device
    (with no device, CUDA device 0's name when CUDA is available).
    """
    cuda_ok = torch.cuda.is_available()
    try:
        dev = torch.device(device) if device is not None else None
    except (RuntimeError, TypeError, ValueError):  # e.g. "auto": not a concrete device
        dev = None
    gpu_name = None
    if cuda_ok and (dev is None or dev.type == "cuda"):
        index = dev.index if dev is not None and dev.index is not None else 0
        gpu_name = torch.cuda.get_device_name(index)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "pandas": _dist_version("pandas"),
        "matplotlib": _dist_version("matplotlib"),
        "cuda_available": cuda_ok,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "gpu_count": torch.cuda.device_count() if cuda_ok else 0,
        "gpu_name": gpu_name,
        "device": str(dev if dev is not None else device) if device is not None else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "utc_time": utc_now(),
    }


def _git(repo: Path, *args: str) -> str | None:
    """Output of `git -C repo args...`, stripped; None when git or the repository is missing."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}  # status must not write
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True, text=True, timeout=15, env=env, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_info(repo: str | os.PathLike = REPO_ROOT) -> dict:
    """`{"revision": sha, "dirty": bool, "branch": name}` of the repository at `repo`.

    `dirty` counts changes to tracked files only (as `git describe --dirty` does); untracked
    files do not make a tree dirty. Any field git cannot answer is None: git not installed,
    not a repository, no commit yet, detached HEAD (branch). A tree copied without its history
    (the GPU machine) reports the revision it was copied from through $NLCORE_GIT_REVISION and
    $NLCORE_GIT_DIRTY, which the scripts under scripts/reproduce/ set.
    """
    if os.environ.get("NLCORE_GIT_REVISION"):  # a copy of the tree without history (GPU box)
        return {"revision": os.environ["NLCORE_GIT_REVISION"],
                "dirty": os.environ.get("NLCORE_GIT_DIRTY", "0") == "1", "branch": None, "source": "env"}
    repo = Path(repo)
    if not repo.is_dir() or _git(repo, "rev-parse", "--is-inside-work-tree") != "true":
        return {"revision": None, "dirty": None, "branch": None}
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {
        "revision": _git(repo, "rev-parse", "--verify", "-q", "HEAD") or None,
        "dirty": None if status is None else bool(status),
        "branch": _git(repo, "symbolic-ref", "--short", "-q", "HEAD") or None,
    }


def command_line() -> str:
    """This process's command line as typed (`python -m nlcore train ...`), shell-quoted.

    The interpreter is given by its base name, so no local path ends up in `meta.json`.
    """
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    argv[0] = Path(argv[0]).name
    return shlex.join(argv)
