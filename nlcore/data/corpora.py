"""Text corpora for character-level language modelling: loading, document starts, caching.

Corpora (``load_corpus(name)``):

- ``"wikitext2"``: tokenised WikiText-2 (wikitext-2-v1; Merity et al. 2016), official
  article-disjoint splits, from ``<root>/wikitext-2/{train,valid,test}.txt`` or, failing
  that, from the HuggingFace ``datasets`` hub copy;
- ``"tinyshakespeare"``: ``<root>/tinyshakespeare/input.txt``, train = first 90 % of the
  characters, valid = last 10 %, test = valid (no official test split);
- ``"synthetic"``: the embedded key-recall Markov process of :mod:`nlcore.data.synthetic`
  (needs no files, known entropy rate);
- a directory path or ``"folder:<path>"``: any folder holding ``train.txt``,
  ``valid.txt``, ``test.txt``.

Files are read as bytes and decoded as strict UTF-8, so line endings are never translated.
:func:`prepare` builds the train-split :class:`CharTokenizer`, encodes every split and
keeps the result in a small in-process LRU cache.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlcore import paths
from nlcore.data import synthetic as syn
from nlcore.data.tokenizer import CharTokenizer
from nlcore.errors import DataError

SPLITS = ("train", "valid", "test")
NAMED = ("wikitext2", "tinyshakespeare", "synthetic")
_HF_HINT = "or install `datasets` with access to the HuggingFace hub (wikitext2 only)"


class CorpusNotFoundError(DataError, FileNotFoundError):
    """A corpus (or one of its files) could not be found where it was looked for."""


class CorpusFormatError(DataError, ValueError):
    """A corpus file exists but is unusable (empty, not UTF-8)."""


# ---- document starts ---------------------------------------------------------------------
# An article title is a line ` = Title = ` (one '=' each side; ` = = Section = = ` is a
# subsection). WikiText tables also contain lines like ` = Played , W = `, so a title must
# also have a blank line (or the file start) before it and a blank line after it; with
# this rule the official splits have 600 / 60 / 60 articles.
_TITLE = re.compile(r"^ = (?!=)[^\n]*(?<!=) = \r?$", re.MULTILINE)


def _is_blank_line(text: str, start: int, stop: int) -> bool:
    return text[start:stop].strip() == ""


def wikitext_article_starts(text: str) -> np.ndarray:
    """(N,) bool: True at position 0 and at the leading space of every article title line."""
    mask = np.zeros(len(text), dtype=bool)
    if len(text):
        mask[0] = True
    for m in _TITLE.finditer(text):
        s, e = m.start(), m.end()  # the line is text[s:e]; text[e] is '\n' (or end of text)
        if s > 0:  # the previous line must be blank (or not exist)
            prev_start = text.rfind("\n", 0, s - 1) + 1
            if not _is_blank_line(text, prev_start, s - 1):
                continue
        if e >= len(text) - 1:  # a title must be followed by a (blank) line
            continue
        next_stop = text.find("\n", e + 1)
        if not _is_blank_line(text, e + 1, len(text) if next_stop < 0 else next_stop):
            continue
        mask[s] = True
    return mask


def _first_only(text: str) -> np.ndarray:
    mask = np.zeros(len(text), dtype=bool)
    if len(text):
        mask[0] = True
    return mask


_DOC_RULES = {
    "start": _first_only,
    "wikitext": wikitext_article_starts,
    "episode": syn.episode_starts,
}


@dataclass(frozen=True)
class Corpus:
    """The three splits of a corpus as text, plus where they came from."""

    name: str
    texts: dict[str, str]  # "train" / "valid" / "test" -> text
    source: str  # human-readable provenance
    split_note: str  # how the splits were made
    entropy_rate_bits: float | None = None  # known only for "synthetic"
    doc_rule: str = "start"  # "start" | "wikitext" | "episode": how documents are found
    spec: syn.SyntheticSpec | None = None  # the generator spec for "synthetic"
    files: tuple[str, ...] = ()  # the files read (absolute paths); none for generated or hub text

    def __post_init__(self) -> None:
        if set(self.texts) != set(SPLITS):
            raise ValueError(f"texts must have exactly the keys {SPLITS}, got {sorted(self.texts)}")
        if self.doc_rule not in _DOC_RULES:
            raise ValueError(f"doc_rule must be one of {sorted(_DOC_RULES)}, got {self.doc_rule!r}")

    def doc_starts(self, split: str) -> np.ndarray:
        """(N,) bool: True at the first character of each document of `split`."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return _DOC_RULES[self.doc_rule](self.texts[split])


# ---- reading -----------------------------------------------------------------------------
def read_text(path: Path) -> str:
    """Strict UTF-8 text of `path`, line endings untouched; clear errors for bad files."""
    if not path.is_file():
        raise CorpusNotFoundError(f"missing corpus file {path}: restore it, or point NLCORE_DATA at a "
                                  f"complete copy of the data")
    data = path.read_bytes()
    if not data:
        raise CorpusFormatError(f"empty corpus file {path} (0 bytes): restore it from the original data")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusFormatError(
            f"corpus file {path} is not valid UTF-8 (first bad byte at offset {e.start}, "
            f"0x{data[e.start]:02x}: {e.reason}): convert it to UTF-8 or restore the original"
        ) from e


def _read_folder(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        raise CorpusNotFoundError(f"missing corpus folder {folder}: create it with train.txt, valid.txt "
                                  f"and test.txt, or name another corpus")
    return {s: read_text(folder / f"{s}.txt") for s in SPLITS}


def candidate_roots(data_root: str | os.PathLike | None = None) -> list[Path]:
    """Where to look. An explicit root (the argument, else $NLCORE_DATA) is the only place looked
    in: a wrong one is an error, never a silent fall back to another copy. Without one:
    <repo>/data, then <repo>/../shared/data."""
    explicit = paths.data_root(data_root)
    if explicit is not None:
        return [explicit]
    return [paths.REPO_ROOT / "data", paths.REPO_ROOT.parent / "shared" / "data"]


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def _wikitext2_from_hub() -> dict[str, str]:
    """The hub copy of wikitext-2-v1, rebuilt byte-exact: blank rows were the lines ' \\n'."""
    from datasets import load_dataset  # lazy: optional dependency

    ds = load_dataset("Salesforce/wikitext", "wikitext-2-v1")
    hub = {"train": "train", "valid": "validation", "test": "test"}
    return {s: "".join(t if t else " \n" for t in ds[hub[s]]["text"]) for s in SPLITS}


def _load_wikitext2(roots: list[Path]) -> Corpus:
    tried = []
    for root in roots:
        folder = root / "wikitext-2"
        tried.append(str(folder))
        if folder.is_dir():
            texts = _read_folder(folder)
            return Corpus("wikitext2", texts, f"wikitext-2-v1 (tokenised) from {folder}",
                          "official WikiText-2 splits (article-disjoint)", doc_rule="wikitext",
                          files=tuple(str((folder / f"{s}.txt").resolve()) for s in SPLITS))
    if importlib.util.find_spec("datasets") is None:
        tried.append("HuggingFace hub: skipped (`datasets` is not installed)")
    elif _offline():
        tried.append("HuggingFace hub: skipped (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set)")
    else:
        try:
            texts = _wikitext2_from_hub()
            return Corpus("wikitext2", texts, "wikitext-2-v1 (tokenised) from the HuggingFace "
                          "hub (Salesforce/wikitext)", "official WikiText-2 splits "
                          "(article-disjoint)", doc_rule="wikitext")
        except Exception as e:  # noqa: BLE001 - any hub failure becomes one clear error
            tried.append(f"HuggingFace hub Salesforce/wikitext: failed ({type(e).__name__}: {e})")
    raise _not_found("wikitext2", "wikitext-2/{train,valid,test}.txt", tried, hub=True)


def _load_tinyshakespeare(roots: list[Path]) -> Corpus:
    tried = []
    for root in roots:
        path = root / "tinyshakespeare" / "input.txt"
        tried.append(str(path))
        if path.is_file():
            text = read_text(path)
            n_train = int(0.9 * len(text))
            texts = {"train": text[:n_train], "valid": text[n_train:], "test": text[n_train:]}
            return Corpus("tinyshakespeare", texts, f"Tiny Shakespeare (char-rnn) from {path}",
                          f"train = first 90 % of characters (text[:{n_train}]), valid = last "
                          f"10 %; no official test split, so test is the SAME text as valid",
                          files=(str(path.resolve()),))
    raise _not_found("tinyshakespeare", "tinyshakespeare/input.txt", tried, hub=False)


def _not_found(name: str, layout: str, tried: list[str], hub: bool) -> CorpusNotFoundError:
    how = f"set NLCORE_DATA to a folder that holds {layout}" + (f", {_HF_HINT}" if hub else "")
    return CorpusNotFoundError(f"corpus {name!r} not found (looked in: {'; '.join(tried)}): {how}")


def load_corpus(name: str, data_root: str | os.PathLike | None = None, **synthetic_kwargs: Any) -> Corpus:
    """Load corpus `name` ("wikitext2", "tinyshakespeare", "synthetic", a folder, "folder:<path>").

    `synthetic_kwargs` go to :class:`SyntheticSpec` (only for "synthetic"); an int
    ``n_chars`` means ``(n, n // 10, n // 10)``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if name != "synthetic" and synthetic_kwargs:
        raise TypeError(f"keyword arguments {sorted(synthetic_kwargs)} apply only to name='synthetic'")
    if name == "synthetic":
        kw = dict(synthetic_kwargs)
        if isinstance(kw.get("n_chars"), int):
            n = kw["n_chars"]
            kw["n_chars"] = (n, max(n // 10, 1), max(n // 10, 1))
        try:
            spec = syn.SyntheticSpec(**kw)
        except TypeError as e:
            raise TypeError(f"bad synthetic keyword argument: {e}") from None
        texts = {s: syn.generate(spec, s) for s in SPLITS}
        return Corpus("synthetic", texts, spec.describe(),
                      "each split generated from its own seed stream [seed, split_index]; "
                      "the transition matrix is shared", spec.entropy_rate_bits(),
                      doc_rule="episode", spec=spec)
    if name == "wikitext2":
        return _load_wikitext2(candidate_roots(data_root))
    if name == "tinyshakespeare":
        return _load_tinyshakespeare(candidate_roots(data_root))
    folder = Path(name[len("folder:"):] if name.startswith("folder:") else name).expanduser()
    if name.startswith("folder:") or folder.is_dir():
        texts = _read_folder(folder)
        return Corpus(f"folder:{folder}", texts, f"local folder {folder.resolve()}",
                      "the folder's own train.txt / valid.txt / test.txt",
                      files=tuple(str((folder / f"{s}.txt").resolve()) for s in SPLITS))
    raise CorpusNotFoundError(
        f"data.corpus: unknown corpus {name!r} (no folder {str(folder.resolve())!r} either): use one of "
        f"{', '.join(NAMED)}, or a folder holding train.txt, valid.txt and test.txt"
    )


# ---- tokenised + cached ------------------------------------------------------------------
@dataclass
class TokenizedCorpus:
    """A corpus encoded with its train-split CharTokenizer. Treat the tensors as read-only."""

    name: str
    tokenizer: CharTokenizer
    ids: dict[str, torch.Tensor]  # split -> (N,) long
    doc_starts: dict[str, torch.Tensor]  # split -> (N,) bool
    stats: dict[str, Any] = field(default_factory=dict)
    entropy_rate_bits: float | None = None
    source: str = ""
    split_note: str = ""
    files: tuple[str, ...] = ()  # the files read (absolute paths)


_CACHE: OrderedDict[tuple, TokenizedCorpus] = OrderedDict()
_CACHE_SIZE = 8


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v


def joint_tokenizer(corpora: Iterable[Corpus | TokenizedCorpus]) -> CharTokenizer:
    """One vocabulary for several corpora: the sorted union of their train splits' characters
    (a TokenizedCorpus built by :func:`tokenize_corpus` without a tokenizer holds exactly its train
    characters), so a model trained on one corpus and continued on another reads both with the
    same ids; held-out characters outside every train split stay ``unk_id``."""
    chars: set[str] = set()
    for c in corpora:
        chars |= set(c.tokenizer.chars) if isinstance(c, TokenizedCorpus) else set(c.texts["train"])
    return CharTokenizer(sorted(chars))


def tokenize_corpus(corpus: Corpus, tokenizer: CharTokenizer | None = None) -> TokenizedCorpus:
    """Encode all splits with `tokenizer` (default: the train split's own), count unknowns and documents."""
    tok = tokenizer if tokenizer is not None else CharTokenizer.from_text(corpus.texts["train"])
    ids, docs, stats = {}, {}, {"vocab_size": tok.vocab_size}
    for s in SPLITS:
        text = corpus.texts[s]
        ids[s] = tok.encode(text)  # (N,)
        docs[s] = torch.from_numpy(corpus.doc_starts(s))  # (N,)
        n_unk = int((ids[s] == tok.unk_id).sum())
        stats[s] = {"chars": len(text), "unknown": n_unk,
                    "unknown_chars": tok.unknown_chars(text) if n_unk else {},
                    "documents": int(docs[s].sum())}
        if corpus.spec is not None:  # measured losses of the exact predictors on this split
            stats[s]["optimal_bits"] = syn.optimal_log_loss_bits(corpus.spec, text)
            stats[s]["forgetful_bits"] = syn.forgetful_log_loss_bits(corpus.spec, text)
    if corpus.spec is not None:
        stats["entropy_rate_bits"] = corpus.spec.entropy_rate_bits()
        stats["forgetful_rate_bits"] = corpus.spec.forgetful_rate_bits()
    return TokenizedCorpus(corpus.name, tok, ids, docs, stats, corpus.entropy_rate_bits,
                           corpus.source, corpus.split_note, corpus.files)


def prepare(name: str, data_root: str | os.PathLike | None = None, *, tokenizer: CharTokenizer | None = None,
            **kw: Any) -> TokenizedCorpus:
    """:func:`load_corpus` + :func:`tokenize_corpus` (with `tokenizer`, else the train split's
    own), cached in-process (LRU of 8)."""
    root = data_root or os.environ.get("NLCORE_DATA") or ""
    root = str(Path(root).expanduser().resolve()) if root else ""
    key = (name, root, tuple(sorted((k, _freeze(v)) for k, v in kw.items())),
           None if tokenizer is None else tokenizer.chars)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    result = tokenize_corpus(load_corpus(name, data_root, **kw), tokenizer)
    _CACHE[key] = result
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result


def clear_cache() -> None:
    """Forget every corpus :func:`prepare` has cached."""
    _CACHE.clear()
