"""Held-out bpc: every covered target counts once, with the training stream protocol."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nlcore.config import StateConfig
from nlcore.data.streams import CharStream
from nlcore.models import NestedLSTM
from nlcore.training.evaluate import evaluate, unigram_bpc


def test_bpc_equals_cross_entropy_over_every_target():
    torch.manual_seed(0)
    V, B, T = 9, 3, 5
    model = NestedLSTM(V, 8, 12).double()
    ids = torch.randint(0, V, (B * 17 + 1,))
    stream = CharStream(ids, B, T, drop_last=False)  # rows of 17: windows 5, 5, 5, 2
    out = evaluate(model, stream, StateConfig(reset="never"), device="cpu", by_position=True)
    L = (ids.numel() - 1) // B
    x = torch.stack([ids[b * L:(b + 1) * L] for b in range(B)])  # (B, L): each row read in one go
    y = torch.stack([ids[b * L + 1:(b + 1) * L + 1] for b in range(B)])
    logits, _ = model(x)  # carrying state across windows = one long window per row
    nats = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
    assert out["targets"] == B * L
    assert abs(out["bpc"] - nats / (B * L) / math.log(2)) < 1e-12
    assert len(out["bpc_by_position"]) == T


def test_reset_every_batch_sees_less_context():
    torch.manual_seed(1)
    model = NestedLSTM(9, 8, 12).double()
    ids = torch.randint(0, 9, (401,))
    stream = CharStream(ids, 4, 10)
    carry = evaluate(model, stream, StateConfig(reset="never"), device="cpu")
    reset = evaluate(model, stream, StateConfig(reset="every_batch"), device="cpu")
    assert carry["targets"] == reset["targets"] and carry["bpc"] != reset["bpc"]


class _Tok:
    vocab_size = 3


class _Corpus:
    tokenizer = _Tok()
    ids = {"train": torch.tensor([0, 0, 0, 1]), "valid": torch.tensor([0, 1, 2])}


def test_unigram_bpc_is_add_one_smoothed_frequencies():
    p = [4 / 7, 2 / 7, 1 / 7]  # counts (3, 1, 0) + 1 over 4 + 3
    expect = -sum(math.log2(q) for q in p) / 3
    assert abs(unigram_bpc(_Corpus(), "valid") - expect) < 1e-12
