"""Packaging: environment.yml agrees with pyproject, every nlcore module imports without side
effects, and `make help` documents every documented target."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _env_yml() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((REPO / "environment.yml").read_text(encoding="utf-8"))


def _pip_extras(spec: str) -> set[str]:
    m = re.search(r"\[([^\]]*)\]", spec)
    return {e.strip() for e in m.group(1).split(",")} if m else set()


def test_environment_yml_agrees_with_pyproject():
    from packaging.specifiers import SpecifierSet

    env = _env_yml()
    assert env["name"] == "nlcore"
    assert "conda-forge" in env["channels"]
    deps = env["dependencies"]
    (python,) = [d for d in deps if isinstance(d, str) and re.fullmatch(r"python\s*[=<>].*", d)]
    pin = re.sub(r"^python\s*=*\s*", "", python).rstrip(".*")
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert requires.contains(pin), f"{python} outside requires-python {requires}"
    assert "pip" in deps
    (pip_section,) = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    (editable,) = [s for s in pip_section if s.replace(" ", "").startswith("-e.")]
    extras = _pip_extras(editable)
    assert extras == {"notebooks", "dev"}
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])


def test_makefile_installs_the_same_extras():
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    specs = re.findall(r'install -e "?(\.\[[^\]]*\])', text)
    assert specs, "the Makefile's env target should pip install -e .[extras]"
    for spec in specs:
        assert _pip_extras(spec) == {"notebooks", "dev"}


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "set -euo pipefail" in ci
    assert re.search(r"^make test\s*$", ci, re.M)
    assert re.search(r"^make test\b", readme, re.M)


# ---------------------------------------------------------------------------- import effects

_PROBE = r"""
import importlib, json, os, random, sys
import numpy as np, torch, matplotlib

ALLOWED = tuple(os.path.realpath(p) for p in (os.environ["HOME"], "/dev"))  # third-party caches
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
current, writes = None, {}

def _record(path):
    if current is None or isinstance(path, int):
        return
    path = os.path.realpath(os.fsdecode(path))
    if not path.startswith(ALLOWED):
        writes.setdefault(current, []).append(path)

def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE_FLAGS:
            _record(path)
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.utime"):
        _record(args[0])
    elif event in ("os.rename", "os.replace", "os.link", "os.symlink", "shutil.copyfile"):
        _record(args[1])

def snapshot():
    return {
        "torch_seed": torch.initial_seed(),
        "torch_rng": torch.get_rng_state().tolist(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state()[1].tolist() + [int(np.random.get_state()[2])],
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "dtype": str(torch.get_default_dtype()),
        "rcparams": {k: repr(v) for k, v in matplotlib.rcParams.items() if k != "backend"},
    }

sys.addaudithook(_hook)
out = []
for name in sys.argv[1:]:
    before = snapshot()
    current = name
    try:
        importlib.import_module(name)
    except Exception as exc:
        out.append({"module": name, "error": f"{type(exc).__name__}: {exc}"})
        continue
    finally:
        current = None
    after = snapshot()
    changed = sorted(k for k in before if before[k] != after[k])
    out.append({"module": name, "error": None, "changed": changed,
                "writes": sorted(set(writes.get(name, [])))})
print("PROBE" + json.dumps(out))
"""


OPTIONAL = {"nlcore.ops.triangular_kernels": "triton", "nlcore.ops.mlp_memory.kernels": "triton",  # need an optional package
            "nlcore.ops.hope_memory.kernels": "triton"}


def _modules() -> list[str]:
    """Every module file under nlcore/ (subpackages included), found at test time; a module of
    OPTIONAL only when its package is installed."""
    import importlib.util

    names = []
    for path in sorted((REPO / "nlcore").rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        if "__pycache__" in rel.parts or rel.name == "__main__":
            continue  # __main__ runs the CLI when imported
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        name = ".".join(parts)
        if name in OPTIONAL and importlib.util.find_spec(OPTIONAL[name]) is None:
            continue
        names.append(name)
    return sorted(set(names))


def _probe(modules: list[str], tmp_path: Path, path: Path = REPO) -> tuple[list[dict], Path]:
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "HOME": str(home),
           "XDG_CACHE_HOME": str(home / ".cache"), "MPLCONFIGDIR": str(home / "mpl"),
           "HF_HOME": str(home / "hf"), "PYTHONPATH": str(path)}
    proc = subprocess.run([sys.executable, "-c", _PROBE, *modules], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.rsplit("PROBE", 1)[1]), cwd


def test_no_module_seeds_or_writes_at_import(tmp_path):
    """Import every nlcore module in a fresh interpreter, one after another, and check that
    none touches an RNG, a global torch flag or the plot style, or opens a file for writing
    (seen through Python's audit hooks; third-party caches under $HOME are tolerated)."""
    modules = _modules()
    assert "nlcore.repro" in modules and "nlcore.results" in modules
    report, cwd = _probe(modules, tmp_path)
    failed = {r["module"]: r["error"] for r in report if r["error"]}
    assert not failed, f"nlcore modules that fail to import: {failed}"
    effects = {r["module"]: r["changed"] for r in report if r["changed"]}
    assert not effects, f"import-time side effects (seeding, global flags, style): {effects}"
    writes = {r["module"]: r["writes"] for r in report if r["writes"]}
    assert not writes, f"modules that write files at import: {writes}"
    assert list(cwd.iterdir()) == [], "an import wrote into the working directory"


def test_the_import_probe_catches_offenders(tmp_path):
    pkg = tmp_path / "src" / "canary"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "writer.py").write_text("open('out.txt', 'w').close()\n")
    (pkg / "seeder.py").write_text("import torch\ntorch.manual_seed(0)\n")
    (pkg / "styler.py").write_text("import matplotlib\nmatplotlib.rcParams['font.size'] = 3\n")
    (pkg / "broken.py").write_text("raise RuntimeError('no')\n")
    names = ["canary", "canary.broken", "canary.seeder", "canary.styler", "canary.writer"]
    report, _ = _probe(names, tmp_path, path=tmp_path / "src")
    by = {r["module"]: r for r in report}
    assert by["canary"]["changed"] == [] and by["canary"]["writes"] == []
    assert "RuntimeError" in by["canary.broken"]["error"]
    assert "torch_seed" in by["canary.seeder"]["changed"]
    assert by["canary.styler"]["changed"] == ["rcparams"]
    assert by["canary.writer"]["writes"][0].endswith("out.txt")


# ---------------------------------------------------------------------------- Makefile


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_help_lists_every_documented_target():
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    documented = re.findall(r"^([A-Za-z0-9_.-]+):[^\n#]*##\s*(.+)$", text, re.M)
    assert {"help", "env", "test", "test-fast", "smoke", "figures", "docs", "lint", "clean"} <= {
        t for t, _ in documented}
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}

    def make(*args):
        return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO), *args],
                              capture_output=True, text=True, timeout=60, env=env)

    proc = make("help")
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    for target, comment in documented:
        assert target in listed, f"make help does not list {target}"
        assert comment.strip() in listed[target]
    assert make().stdout == proc.stdout, "help must be the default goal"
