"""Contiguous batched character streams: the reading order persistent state needs.

A split of N ids is cut into B contiguous rows of length ``L = (N - 1) // B`` and read in
windows of T characters, so row b of window i+1 continues exactly where row b of window i
stopped (the carried state of row b always sees its own past):

    x[b, t] = ids[b*L + i*T + t],   y[b, t] = ids[b*L + i*T + t + 1]   (targets shifted by one)

There are ``L // T`` windows with ``drop_last`` (else ``ceil(L / T)``, the last one
shorter). ``doc_start[b, t]`` is True where input x[b, t] is the first character of a
document, so models can reset state there if they choose.

Data-parallel shards (``rows=(r0, r1)``, used by nlcore.accel.ddp): the stream keeps only rows
r0..r1-1 of the B-row layout above (L still computed from the global B), so rank k of N owns
rows [k·B/N, (k+1)·B/N) of every window and each row's carried state stays on one rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from nlcore.data.corpora import TokenizedCorpus


class Batch(NamedTuple):
    x: torch.Tensor  # (B, T) long, inputs
    y: torch.Tensor  # (B, T) long, targets: the next character of each input
    doc_start: torch.Tensor  # (B, T) bool, True where x[b, t] starts a document
    index: int  # window index i


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class CharStream:
    """Batched, stateful-friendly reader of one split: B rows x windows of T characters."""

    def __init__(
        self,
        ids: torch.Tensor,
        batch_size: int,
        seq_len: int,
        doc_starts: torch.Tensor | None = None,
        *,
        drop_last: bool = True,
        device: torch.device | str | None = None,
        rows: tuple[int, int] | None = None,
    ):
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1:
            raise ValueError("ids must be a 1-D LongTensor (N,)")
        if ids.dtype != torch.long:
            raise ValueError(f"ids must have dtype torch.long, got {ids.dtype}")
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not _is_int(seq_len) or seq_len < 2:
            raise ValueError(f"seq_len (window) must be ≥ 2, got {seq_len!r}")
        N = ids.numel()
        if doc_starts is not None:
            if not isinstance(doc_starts, torch.Tensor) or doc_starts.shape != ids.shape:
                raise ValueError(
                    f"doc_starts must be a bool tensor of the same shape as ids ({N},), "
                    f"got {getattr(doc_starts, 'shape', type(doc_starts).__name__)}"
                )
        L = (N - 1) // batch_size  # row length (inputs per row)
        if L < 1 or (drop_last and L < seq_len):
            need = (seq_len if drop_last else 1) * batch_size + 1
            raise ValueError(
                f"batch_size={batch_size} is too large for this split: it has {N} characters, "
                f"giving rows of {max(L, 0)} characters, fewer than "
                f"{'seq_len=' + str(seq_len) if drop_last else '1'} (need at least {need} "
                f"characters, or a smaller batch_size / seq_len)"
            )
        # nlcore.accel.ddp: a shard keeps rows r0..r1-1 of the global B-row layout (L from B)
        r0, r1 = (0, batch_size) if rows is None else rows
        if not (_is_int(r0) and _is_int(r1) and 0 <= r0 < r1 <= batch_size):
            raise ValueError(f"rows must be (r0, r1) with 0 <= r0 < r1 <= batch_size={batch_size}, got {rows!r}")
        self.global_batch_size, self.rows = batch_size, (r0, r1)
        self.batch_size, self.seq_len, self.drop_last = r1 - r0, seq_len, drop_last  # rows read here
        self.num_chars, self.row_len = N, L
        self.num_windows = L // seq_len if drop_last else math.ceil(L / seq_len)
        idx = torch.arange(r0, r1)[:, None] * L + torch.arange(L + 1)[None, :]  # (B, L+1)
        self.device = torch.device(device) if device is not None else ids.device
        self._ids = ids[idx].to(self.device)  # (B, L+1): row b = ids[b*L : (b+1)*L + 1]
        if doc_starts is None:
            self._docs = torch.zeros(batch_size, L, dtype=torch.bool, device=self.device)
        else:
            self._docs = doc_starts.to(torch.bool)[idx[:, :L]].to(self.device)  # (B, L)

    # ---- sizes ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_windows

    @property
    def targets_covered(self) -> int:
        """How many (input, target) pairs one pass over the stream reads."""
        per_row = self.num_windows * self.seq_len if self.drop_last else self.row_len
        return self.batch_size * per_row

    @property
    def dropped(self) -> int:
        """Targets of the split (N - 1 of them) that no window reads (of any shard)."""
        return self.num_chars - 1 - self.targets_covered * self.global_batch_size // self.batch_size

    # ---- access ---------------------------------------------------------------------------
    def window(self, i: int) -> Batch:
        """Window i: columns [i*T, min((i+1)*T, L)) of every row; negative i counts from the end."""
        if not _is_int(i):
            raise TypeError(f"window index must be an int, got {type(i).__name__}")
        n = self.num_windows
        if not -n <= i < n:
            raise IndexError(f"window index {i} out of range for {n} windows")
        i %= n
        s = i * self.seq_len
        e = min(s + self.seq_len, self.row_len)
        x = self._ids[:, s:e].contiguous()  # (B, T)
        y = self._ids[:, s + 1:e + 1].contiguous()  # (B, T) targets shifted by one
        return Batch(x, y, self._docs[:, s:e].contiguous(), i)

    def __getitem__(self, i: int) -> Batch:
        return self.window(i)

    def iter_from(self, i: int = 0) -> Iterator[Batch]:
        """Windows i, i+1, ..., len-1 in order (resume a pass after window i-1)."""
        if not _is_int(i) or not 0 <= i <= self.num_windows:
            raise ValueError(f"start index i must be an int in [0, {self.num_windows}], got {i!r}")
        for k in range(i, self.num_windows):
            yield self.window(k)

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)

    def __repr__(self) -> str:
        shard = "" if self.batch_size == self.global_batch_size else f"rows={self.rows}, "
        return (
            f"CharStream(chars={self.num_chars}, batch_size={self.batch_size}, {shard}"
            f"seq_len={self.seq_len}, row_len={self.row_len}, windows={self.num_windows}, "
            f"dropped={self.dropped}, device={self.device})"
        )


def stream_for(
    corpus: TokenizedCorpus,
    split: str,
    batch_size: int,
    seq_len: int,
    device: torch.device | str | None = None,
    drop_last: bool = True,
) -> CharStream:
    """A :class:`CharStream` over `split` of a prepared corpus, with its document starts."""
    if split not in corpus.ids:
        raise ValueError(f"split must be one of {sorted(corpus.ids)}, got {split!r}")
    return CharStream(corpus.ids[split], batch_size, seq_len, corpus.doc_starts.get(split),
                      drop_last=drop_last, device=device)
