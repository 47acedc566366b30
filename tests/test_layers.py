"""The package's layers, declared once, and the import rules they imply.

Every import inside `nlcore/` is read from the source (imports inside functions and under
`TYPE_CHECKING` included) and must go from a module to one in the same or a lower layer; the
module graph has no cycle; a model never imports another model; no module imports another
module's private (underscore) names. `docs/architecture.md` draws these layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nlcore"

# Low to high. A module belongs to the first entry that equals it or is a package above it.
LAYERS: list[tuple[str, ...]] = [
    ("nlcore.paths", "nlcore.stats", "nlcore.errors"),  # foundation: where files go, statistics, errors
    ("nlcore.repro",),  # seeding, devices, provenance
    ("nlcore.results",),  # results files: runs.csv, summary.json, meta.json
    ("nlcore.config",),  # frozen dataclasses, presets, overrides
    ("nlcore.data", "nlcore.ops"),  # corpora and streams; the memory operators of Titans and HOPE
    ("nlcore.delta",),  # the delta rule's maths (lesson 04)
    ("nlcore.models",),  # sequence models
    ("nlcore.optim",),  # per-level optimizers: the delta rule, sliced Adam
    ("nlcore.cms", "nlcore.state", "nlcore.surprise"),  # the paper's mechanisms (lessons 01-03)
    ("nlcore.accel",),  # precision, torch.compile, the CUDA-graph step, data parallelism
    ("nlcore.training",),  # the trainer, evaluation, checkpoints, schedules
    ("nlcore.experiments", "nlcore.bench"),  # grids and registered experiments; benchmarks
    ("nlcore.report",),  # figures, notebook helpers, the notebook runner
    ("nlcore.cli", "nlcore.__main__", "nlcore"),  # entry points and the public API
]
MODEL_SHARED = ("nlcore.models", "nlcore.models.base", "nlcore.models.layers", "nlcore.models.memory_layers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    for i, group in enumerate(LAYERS):
        for name in group:
            if module == name or (name != "nlcore" and module.startswith(name + ".")):
                return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every nlcore import in the file."""
    module = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "nlcore"]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node, path.name == "__init__.py")
            if target.split(".")[0] != "nlcore":
                continue
            names = [a.name for a in node.names]
            known = {module_name(p) for p in PACKAGE.rglob("*.py")}
            subs = [n for n in names if f"{target}.{n}" in known]  # `from pkg import module`
            out += [(f"{target}.{n}", [], node.lineno) for n in subs]
            rest = [n for n in names if n not in subs]
            if rest or not subs:
                out.append((target, rest, node.lineno))
    return out


SOURCES = sorted(PACKAGE.rglob("*.py"))
EDGES = {module_name(p): imports(p) for p in SOURCES}


def test_every_module_has_a_layer():
    for module in EDGES:
        layer_of(module)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_go_down_or_sideways(path):
    module = module_name(path)
    bad = [f"line {line}: {module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
           for target, _, line in EDGES[module] if layer_of(target) > layer_of(module)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {m: sorted({t for t, _, _ in edges if t in EDGES and t != m}) for m, edges in EDGES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)


def test_models_never_import_each_other():
    for module, edges in EDGES.items():
        if not module.startswith("nlcore.models.") or module in MODEL_SHARED:
            continue
        bad = [t for t, _, _ in edges if t.startswith("nlcore.models") and t not in MODEL_SHARED]
        assert not bad, f"{module} imports the model module(s) {bad}: move what they share to models.base/layers"


def test_no_private_names_across_modules():
    bad = []
    for module, edges in EDGES.items():
        for target, names, line in edges:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != module:
                bad.append(f"{module} line {line}: {private} from {target}")
    assert not bad, "\n".join(bad)


def test_the_top_of_the_package_reads_as_a_table_of_contents():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 15, modules
    for pkg in (p for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        assert (pkg / "__init__.py").is_file(), f"{pkg.name}/ has no __init__.py"
