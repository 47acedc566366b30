"""Test defaults: CPU, one torch thread, deterministic algorithms, offline, and no writes
outside temporary folders.

- Every test runs with its working directory set to its own `tmp_path`, and with
  `nlcore.paths.BUILD` pointing into it, so smoke-mode outputs and relative paths land there.
- Each test starts from the same RNG states (seed 0) and gets the global torch flags back as they
  were, whatever it changed, so tests do not depend on their order (or on xdist's split).
- At the end of the session the committed `figures/` and `results/` are checked unchanged.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
_GUARDED = ("figures", "results")  # committed artefacts a test must never touch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def _snapshot() -> dict[str, tuple[int, int]]:
    files = {}
    for name in _GUARDED:
        for p in sorted((REPO_ROOT / name).rglob("*")):
            if p.is_file():
                st = p.stat()
                files[str(p.relative_to(REPO_ROOT))] = (st.st_size, st.st_mtime_ns)
    return files


def pytest_sessionstart(session):
    session.config._nlcore_snapshot = _snapshot()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_nlcore_snapshot", None)
    if before is None or hasattr(session.config, "workerinput"):
        return
    after = _snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print(f"\nERROR: the test session changed committed artefacts: {changed[:10]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Per test: cwd and smoke build root in tmp, RNGs seeded to 0, torch flags restored."""
    import nlcore.paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(nlcore.paths, "BUILD", tmp_path / "build")
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.get_num_threads(),
        torch.get_default_dtype(),
    )
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[2], flags[3]
    torch.set_num_threads(flags[4])
    torch.set_default_dtype(flags[5])


@pytest.fixture
def tmp_out(tmp_path) -> Path:
    """An empty output folder inside the test's tmp dir."""
    out = tmp_path / "out"
    out.mkdir()
    return out


@pytest.fixture(params=["solve", "inverse"])
def solve_path(request, monkeypatch):
    """Both ways of the chunk paths' triangular solves (nlcore.ops.triangular): on the CPU the
    "inverse" path takes its T from solve_triangular; the Triton kernel is tested on a GPU."""
    from nlcore.ops import triangular as tri

    monkeypatch.setattr(tri, "PREFERRED", request.param)
    return request.param
