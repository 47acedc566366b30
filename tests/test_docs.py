"""The README and docs/: generated tables equal what results/ gives, the README stays short and types
no number, every link resolves, the architecture page draws the declared layers, and the
reproduce scripts call modules that exist."""

from __future__ import annotations

import importlib.util
import re
import runpy
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_WORDS = 1200


def _generator():
    spec = importlib.util.spec_from_file_location("readme_tables", REPO / "scripts" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _without_blocks(text: str) -> str:
    return re.sub(r"^<!-- ([\w-]+):start -->$.*?^<!-- \1:end -->$", "", text, flags=re.S | re.M)


# ---------------------------------------------------------------------------- generated tables


def test_committed_tables_equal_generated_ones(capsys):
    gen = _generator()
    assert {p.name for p in gen.files()} == {p.name for p in PAGES}
    rc = gen.main(["--check"])
    assert rc == 0, "README.md or docs/*.md differ from the generated tables: run `make docs`\n" + capsys.readouterr().out


def test_every_page_holds_its_blocks():
    names = {p.name: set(re.findall(r"^<!-- ([\w-]+):start -->$", p.read_text(encoding="utf-8"), re.M))
             for p in PAGES}
    assert {"index", "models", "main_number"} <= names["README.md"]
    assert {"headline", "results", "gallery"} <= names["results.md"]
    assert {"bench", "memory_paths"} <= names["performance.md"]
    assert {"hope"} <= names["hope_titans.md"]
    assert {"reproduce", "notebooks"} <= names["reproduce.md"]
    unknown = {(page, n) for page, ns in names.items() for n in ns if n not in _generator().BLOCKS}
    assert not unknown


def test_intervals_are_read_and_labelled_not_computed():
    gen = _generator()
    assert gen.ci_name("bootstrap95") == "95 % percentile-bootstrap interval"
    assert gen.ci_name("t95") == gen.ci_name("student_t95") == "95 % Student-t interval"
    assert gen.ci_label([{"ci_method": "t95"}, {"ci_method": "bootstrap95"}]).count("interval") == 2
    # an asymmetric interval comes out as stored: nothing is recomputed from the mean
    assert gen.compact({"mean": 1.0, "ci_low": 0.5, "ci_high": 2.0}) == "1.000 [0.500, 2.000]"
    assert gen.compact({"mean": 1.0, "ci_low": float("nan"), "ci_high": float("nan")}) == "1.000"


def test_every_results_folder_is_in_the_reproduce_table():
    gen = _generator()
    listed = {entry[0].split("/")[0] for entry in gen.REPRODUCE}
    folders = {p.name for p in (REPO / "results").iterdir() if p.is_dir()}
    assert folders <= listed, f"results folders missing from REPRODUCE: {sorted(folders - listed)}"
    for path, how, _ in gen.REPRODUCE:
        assert (REPO / "results" / path).exists(), path
        if how.startswith("S:"):
            assert (REPO / "scripts" / "reproduce" / how[2:].split()[0]).exists(), how


# ---------------------------------------------------------------------------- README


def test_readme_fits_on_a_few_screens():
    words = len(README.read_text(encoding="utf-8").split())  # what `wc -w` counts
    assert words <= MAX_README_WORDS, f"README.md has {words} words (at most {MAX_README_WORDS})"


# Digits the README may hold outside its generated blocks and code: the paper's year, measured
# command times (not results), a core count, notebook numbers, the name WikiText-2.
ALLOWED_NUMBERS = re.compile(r"WikiText-2|\b(?:19|20)\d\d\)|\b\d+(?:\.\d+)? min\b|\b\d+-core\b|\bnotebooks? \d\d\b")


def typed_numbers(text: str) -> list[str]:
    """Lines of `text` holding a digit outside generated blocks, code, link targets and ALLOWED_NUMBERS."""
    text = _without_blocks(text)
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # code blocks
    text = re.sub(r"`[^`]*`", "", text)  # inline code
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    text = ALLOWED_NUMBERS.sub("", text)
    return [line for line in text.splitlines() if re.search(r"\d", line)]


def test_readme_types_no_number():
    typed = typed_numbers(README.read_text(encoding="utf-8"))
    assert not typed, f"numbers typed into README.md (generate them from results/): {typed}"


def test_the_number_check_catches_typed_numbers():
    assert typed_numbers("HOPE ends at 1.614 bpc.") and typed_numbers("three seeds (n=3)")
    assert not typed_numbers("<!-- models:start -->\n1.614\n<!-- models:end -->\n`make test` takes 4.5 min")


# ---------------------------------------------------------------------------- links

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img [^>]*src=\"([^\"]+)\"")


def broken_links(text: str, folder: Path) -> list[str]:
    """Link and image targets in `text` (a page in `folder`) that are no file of the repository."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    bad = []
    for m in LINK.finditer(text):
        target = (m.group(1) or m.group(2)).split("#")[0]
        if not target or re.match(r"[a-z]+:", target):  # an anchor in the page, or a URL
            if target.startswith(("http:", "https:")):
                bad.append(f"{target} (links point into the repository)")
            continue
        path = (folder / target).resolve()
        if not path.exists() or REPO not in (path, *path.parents):
            bad.append(target)
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve_to_files_in_the_repository(page):
    bad = broken_links(page.read_text(encoding="utf-8"), page.parent)
    assert not bad, f"{page.name}: links that resolve to no file of the repository: {bad}"


def test_the_link_check_catches_broken_links():
    docs = REPO / "docs"
    assert broken_links("[a](../README.md) ![b](../figures) [c](#top)", docs) == []
    assert broken_links("[a](README.md)", docs) == ["README.md"]
    assert broken_links('<img src="../../etc/passwd">', docs) == ["../../etc/passwd"]
    assert broken_links("[a](https://example.org)", docs)


def test_no_page_names_a_document_outside_the_repository():
    outside = re.compile(r"shared/docs|conventions\.md|layout[-_ ]sketch|environment[-_ ]notes", re.I)
    for page in PAGES:
        assert not outside.search(page.read_text(encoding="utf-8")), page.name


# ---------------------------------------------------------------------------- architecture


def test_architecture_page_draws_the_declared_layers():
    from tests.test_layers import LAYERS

    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    diagram = re.search(r"```mermaid\n(.*?)```", text, re.S).group(1)
    for group in LAYERS:
        for name in group:
            short = name.removeprefix("nlcore.") if name != "nlcore" else "nlcore"
            assert re.search(rf"(?<![\w.]){re.escape(short)}(?![\w])", diagram), f"{name} missing from the diagram"
    subpackages = {p.name for p in (REPO / "nlcore").iterdir() if (p / "__init__.py").exists()}
    for sub in subpackages:
        assert f"`{sub}/`" in text, f"nlcore/{sub}/ has no line in docs/architecture.md"


# ---------------------------------------------------------------------------- scripts

SCRIPTS = sorted((REPO / "scripts").glob("*/*.py")) + sorted((REPO / "scripts").glob("*/*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO / "scripts")))
def test_scripts_call_modules_that_exist(script):
    """Every `python -m X` a script runs exists; a Python script imports (its main does not run)."""
    text = script.read_text(encoding="utf-8")
    for module in re.findall(r"-m\s+((?:nlcore|torch)[\w.]*)", text):
        assert importlib.util.find_spec(module) is not None, f"{script.name}: no module {module}"
    if script.suffix == ".py":
        runpy.run_path(str(script), run_name="imported_by_test")


def test_bench_configurations_named_by_scripts_exist():
    from nlcore.bench import step as bench

    known = set(bench.NAMED) | set(bench.MODELS_06)
    for script in (REPO / "scripts" / "reproduce").glob("*.sh"):
        text = script.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            if "nlcore bench" not in line or "--configs" not in line:
                continue
            words = line.split("--configs", 1)[1].split(";")[0].split(">")[0].split()
            names = [w for w in words if not w.startswith(("-", "$", '"')) and "=" not in w]
            assert set(names) <= known, f"{script.name}: unknown bench configurations {set(names) - known}"
