"""Comments and docstrings say what and why, in the present tense.

Measurements, commit ids and the history of a change belong in `results/**/NOTE.md`, `docs/` or the
commit message; the package never names a document that is not in the repository. This test reads
every comment, docstring and string literal under `nlcore/` and fails on:

- a commit id (7 to 40 hexadecimal digits, letters and digits mixed);
- a measurement (a number followed by µs, us, ms, "s per" or "% faster", a GPU's name);
- the history of a change ("an earlier ...", "previously", a defect story);
- a name of a document outside the repository, or a repository path that does not exist.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "nlcore").rglob("*.py"))

COMMIT = re.compile(r"(?<![0-9A-Za-z_])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![0-9A-Za-z_])")
TIME = re.compile(r"\d(?:[\d.,]*\d)?\s*(?:µs|us|ms)\b|\d\s*s per\b|\d\s*% (?:faster|slower)\b|\bH[12]00\b",
                  re.IGNORECASE)
HISTORY = re.compile(r"\ban earlier\b|\bdefects?\b|\bused to\b|\bpreviously\b", re.IGNORECASE)
OUTSIDE = re.compile(r"paper[-_ ]notes|seed[-_ ]findings|FINDINGS_AND|PERSISTENT_STATES_RESULTS|prior[-_ ]art"
                     r"|environment[-_ ]notes|layout[-_ ]sketch|conventions\.md|DEVELOPERS\.md|shared/docs"
                     r"|\bthe [\w-]+ issue\b|\bissue's\b|\bissue #?\d", re.IGNORECASE)
PATH = re.compile(r"(?<![\w./-])((?:[\w.*-]+/)+[\w.*-]+\.(?:md|py|sh|json|txt|csv|ipynb))\b")
DOC = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")
DATA_LAYOUT = ("wikitext-2/", "tinyshakespeare/")  # the corpora's files under $NLCORE_DATA, not in the repository


def texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and string literal (docstrings included) in the file."""
    src = path.read_text(encoding="utf-8")
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            out.append((tok.start[0], tok.string))
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
    return out


def exists(ref: str) -> bool:
    return any(REPO.glob(ref)) or any(REPO.glob(f"**/{ref}"))


def problems(path: Path) -> list[str]:
    bad = []
    for line, text in texts(path):
        for what, pattern in (("commit id", COMMIT), ("measurement", TIME), ("history", HISTORY),
                              ("outside document", OUTSIDE)):
            for m in pattern.finditer(text):
                bad.append(f"{path.relative_to(REPO)}:{line}: {what} {m.group(0)!r}")
        for m in PATH.finditer(text):
            ref = m.group(1)
            placeholder = "{" in ref or "<" in ref or "NN" in ref
            if not placeholder and not ref.startswith(DATA_LAYOUT) and not exists(ref):
                bad.append(f"{path.relative_to(REPO)}:{line}: missing path {ref!r}")
        for m in DOC.finditer(text):
            if not exists(m.group(1)):
                bad.append(f"{path.relative_to(REPO)}:{line}: missing document {m.group(1)!r}")
    return bad


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO / "nlcore")))
def test_comments_hold_no_history_measurements_or_outside_references(path):
    bad = problems(path)
    assert not bad, "\n".join(bad)


def test_the_checks_catch_what_they_should():
    assert COMMIT.search("measured at 46e97d0 on an H100") and not COMMIT.search("seed 0x9E3779B1, eps 1e-12")
    assert TIME.search("~46 µs per step") and TIME.search("71 -> 60 us") and TIME.search("1.7 ms")
    assert TIME.search("on the H100") and not TIME.search("mean over the last 100 steps")
    assert HISTORY.search("An earlier arrangement carried M") and not HISTORY.search("the earlier chunks")
    assert OUTSIDE.search("see paper-notes.md") and OUTSIDE.search("as the CMS issue asks")
    assert not OUTSIDE.search("issued from inside the hook")
