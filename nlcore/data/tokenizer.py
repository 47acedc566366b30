"""Character-level tokenizer with an explicit unknown-character policy.

The vocabulary is built from the TRAIN split only: the sorted distinct characters of the
train text get ids ``0 .. n-1`` (in code-point order) and one extra reserved id
``unk_id = n`` stands for every character absent from train, so ``vocab_size = n + 1``.

Unknown policy (``"map_to_unk"``): a character outside the vocabulary is mapped to
``unk_id``, never silently dropped; :meth:`CharTokenizer.count_unknown` and
:meth:`CharTokenizer.unknown_chars` count and name them so callers can report them, and
``unk_id`` decodes to U+FFFD. (WikiText's literal 5-character string ``<unk>`` is ordinary
text here and has nothing to do with ``unk_id``.)

Encoding is vectorised: the text becomes a ``uint32`` array of code points
(``str.encode("utf-32-le")``) and a dense code-point -> id table (up to the largest known
code point; anything beyond is unknown) maps it to ids, so 11 M characters encode in well under a second.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

UNK_POLICY = "map_to_unk"
UNK_CHAR = "\ufffd"  # what unk_id decodes to


def _code_points(text: str) -> np.ndarray:
    """The code points of `text` as a (N,) uint32 array (no copy of the decoded buffer)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")  # (N,)


class CharTokenizer:
    """Character vocabulary: ``ids 0..n-1`` = sorted train characters, ``unk_id = n``.

    Build it with :meth:`from_text` on the train split; equality is by content (the
    character list), so a tokenizer saved and loaded again compares equal.
    """

    __slots__ = ("_chars", "_cps", "_table")

    def __init__(self, chars: Iterable[str]):
        chars = tuple(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars must be single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct")
        if list(chars) != sorted(chars):
            raise ValueError("chars must be sorted by code point (as sorted() orders str)")
        self._chars: tuple[str, ...] = chars
        self._cps = np.array([ord(c) for c in chars], dtype=np.uint32)  # (n,) sorted
        top = int(self._cps[-1]) + 2 if len(chars) else 1  # code points >= top-1 are unknown
        self._table = np.full(top, len(chars), dtype=np.int64)  # code point -> id (else unk)
        self._table[self._cps] = np.arange(len(chars))

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The vocabulary of `text` (the train split): its sorted distinct characters."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls(sorted(set(text)))

    # ---- properties ---------------------------------------------------------------------
    @property
    def chars(self) -> tuple[str, ...]:
        """The known characters; character ``chars[i]`` has id ``i``."""
        return self._chars

    @property
    def unk_id(self) -> int:
        """The reserved id of every character absent from the train split."""
        return len(self._chars)

    @property
    def vocab_size(self) -> int:
        """Known characters plus the reserved unknown id."""
        return len(self._chars) + 1

    def __len__(self) -> int:
        return self.vocab_size

    # ---- encode / decode ----------------------------------------------------------------
    def _lookup(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids with unknowns set to unk_id, mask of known positions), both (N,)."""
        cps = _code_points(text)  # (N,)
        ids = self._table[np.minimum(cps, len(self._table) - 1)]  # (N,) dense lookup
        return ids, ids != self.unk_id

    def encode(self, text: str) -> torch.Tensor:
        """Ids of `text` as a (N,) LongTensor; characters absent from train map to unk_id."""
        ids, _ = self._lookup(text)
        return torch.from_numpy(ids)  # (N,)

    def count_unknown(self, text: str) -> int:
        """How many characters of `text` are outside the vocabulary (map to unk_id)."""
        _, known = self._lookup(text)
        return int(len(known) - known.sum())

    def unknown_chars(self, text: str) -> dict[str, int]:
        """Which characters of `text` are unknown and how often, most frequent first."""
        cps = _code_points(text)
        _, known = self._lookup(text)
        values, counts = np.unique(cps[~known], return_counts=True)
        order = np.lexsort((values, -counts))  # by count desc, then code point
        return {chr(int(values[i])): int(counts[i]) for i in order}

    def decode(self, ids: torch.Tensor | np.ndarray | Iterable[int]) -> str:
        """The text of `ids` (any 1-D integer sequence); unk_id decodes to U+FFFD."""
        if isinstance(ids, torch.Tensor):
            arr = ids.detach().cpu().numpy()
        else:
            arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
        arr = arr.reshape(-1)
        if arr.size == 0:
            return ""
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() >= self.vocab_size:
            raise ValueError(
                f"ids must lie in [0, {self.vocab_size}) (vocab_size), got range "
                f"[{int(arr.min())}, {int(arr.max())}]"
            )
        table = np.append(self._cps, np.uint32(ord(UNK_CHAR)))  # (vocab_size,) id -> code point
        return table[arr].astype("<u4").tobytes().decode("utf-32-le", errors="surrogatepass")

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "char",
            "chars": list(self._chars),
            "unk_id": self.unk_id,
            "unk_policy": UNK_POLICY,
            "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        if d.get("kind") != "char":
            raise ValueError(f"tokenizer dict field 'kind' must be 'char', got {d.get('kind')!r}")
        if "chars" not in d:
            raise ValueError("tokenizer dict is missing the field 'chars'")
        if d.get("unk_policy", UNK_POLICY) != UNK_POLICY:
            raise ValueError(
                f"tokenizer dict field 'unk_policy' must be {UNK_POLICY!r}, got {d['unk_policy']!r}"
            )
        tok = cls(d["chars"])
        for key, want in (("unk_id", tok.unk_id), ("vocab_size", tok.vocab_size)):
            if key in d and d[key] != want:
                raise ValueError(f"tokenizer dict field {key!r} is {d[key]}, but chars imply {want}")
        return tok

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (ASCII-escaped, so any character survives)."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=True, indent=1) + "\n",
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    # ---- identity -----------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CharTokenizer):
            return NotImplemented
        return self._chars == other._chars

    def __hash__(self) -> int:
        return hash(self._chars)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unk_id={self.unk_id})"
