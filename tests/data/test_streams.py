"""Tests for nlcore.data.streams: continuity across windows, shifted targets, doc masks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nlcore.data.corpora import prepare
from nlcore.data.streams import Batch, CharStream, stream_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_rows_windows_and_targets_match_raw_ids():
    N, B, T = 103, 4, 5
    ids = torch.arange(N) * 7 % 101  # distinct-ish values, not just arange
    s = CharStream(ids, B, T)
    L = (N - 1) // B
    assert s.row_len == L == 25 and len(s) == L // T == 5
    for i, batch in enumerate(s):
        assert isinstance(batch, Batch) and batch.index == i
        assert batch.x.shape == batch.y.shape == batch.doc_start.shape == (B, T)
        assert batch.x.dtype == torch.long and batch.doc_start.dtype == torch.bool
        for b in range(B):
            start = b * L + i * T
            assert torch.equal(batch.x[b], ids[start:start + T])
            assert torch.equal(batch.y[b], ids[start + 1:start + T + 1])  # shifted by one


def test_row_b_of_window_i_plus_1_continues_window_i():
    ids = torch.randint(0, 50, (1000,), generator=torch.Generator().manual_seed(0))
    s = CharStream(ids, 3, 16)
    for i in range(len(s) - 1):
        a, b = s[i], s[i + 1]
        assert torch.equal(b.x[:, 0], a.y[:, -1])  # the next input is the last target
        assert torch.equal(torch.cat([a.x, b.x], 1)[:, 1:], torch.cat([a.y, b.y], 1)[:, :-1])
    assert torch.equal(s[-1].x, s[len(s) - 1].x)
    assert [w.index for w in s.iter_from(3)] == list(range(3, len(s)))
    with pytest.raises(IndexError):
        s[len(s)]


def test_last_partial_window_without_drop_last():
    N, B, T = 64, 3, 6  # L = 21 -> 3 full windows + one of 3
    ids = torch.arange(N)
    full, part = CharStream(ids, B, T), CharStream(ids, B, T, drop_last=False)
    assert len(full) == 3 and len(part) == 4
    last = part[3]
    assert last.x.shape == (B, 3)
    assert torch.equal(last.x[:, -1], torch.tensor([20, 41, 62]))
    assert torch.equal(last.y[:, -1], torch.tensor([21, 42, 63]))
    assert full.targets_covered == B * 18 and full.dropped == 63 - 54
    assert part.targets_covered == B * 21 and part.dropped == 0


def test_validation_names_the_field():
    ids = torch.arange(50)
    with pytest.raises(ValueError, match="batch_size"):
        CharStream(ids, 0, 4)
    with pytest.raises(ValueError, match="seq_len"):
        CharStream(ids, 2, 1)
    with pytest.raises(ValueError, match=r"batch_size=10 .*50 characters"):
        CharStream(ids, 10, 8)  # rows of 4 < seq_len
    CharStream(ids, 10, 8, drop_last=False)  # rows of 4 are fine without drop_last
    with pytest.raises(ValueError, match=r"batch_size=60 .*50 characters"):
        CharStream(ids, 60, 2, drop_last=False)
    with pytest.raises(ValueError, match="doc_starts"):
        CharStream(ids, 2, 4, torch.zeros(3, dtype=torch.bool))


def test_doc_starts_carried_to_the_right_cell():
    tc = prepare("wikitext2", data_root=FIXTURES)
    ids, docs = tc.ids["train"], tc.doc_starts["train"]
    s = stream_for(tc, "train", batch_size=2, seq_len=7, drop_last=False)
    L, seen = s.row_len, 0
    for batch in s:
        for b, t in batch.doc_start.nonzero().tolist():
            pos = b * L + batch.index * 7 + t
            assert docs[pos] and ids[pos] == batch.x[b, t]
            seen += 1
    covered = torch.cat([docs[b * L:(b + 1) * L] for b in range(2)])
    assert seen == int(covered.sum()) == 3  # position 0, "Alpha", "Beta"


def test_no_doc_starts_means_all_false():
    s = CharStream(torch.arange(40), 2, 4)
    assert not s[0].doc_start.any()
