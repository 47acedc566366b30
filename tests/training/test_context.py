"""Held-out bpc against context (`bpc_by_context`): every target counts once in the bin of its
context, the bins' weighted mean is the plain mean, a position-blind model gives flat bins, and
reading documents side by side (padded) gives what reading each alone gives."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from nlcore.config import apply_overrides, preset
from nlcore.models import NestedLSTM
from nlcore.training.evaluate import bpc_by_context, documents, log_edges
from nlcore.training.trainer import model_for

V = 7
LENGTHS = (40, 1, 17, 63, 5, 2)  # one document too short to predict anything


def _corpus(lengths=LENGTHS, seed=0, lead=3):
    """A split of documents of these lengths after `lead` characters that belong to none."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (lead + sum(lengths),), generator=g)
    starts = torch.zeros(ids.numel(), dtype=torch.bool)
    starts[torch.tensor([lead + sum(lengths[:k]) for k in range(len(lengths))])] = True
    return SimpleNamespace(ids={"test": ids}, doc_starts={"test": starts})


def test_documents_and_log_edges():
    c = _corpus()
    docs = documents(c.doc_starts["test"])
    assert [b - a for a, b in docs] == list(LENGTHS) and docs[0][0] == 3
    assert log_edges(1) == [1] and log_edges(63) == [1, 2, 4, 8, 16, 32] and log_edges(64)[-1] == 64


def test_bins_and_mean_equal_each_document_read_in_one_go():
    torch.manual_seed(0)
    model = NestedLSTM(V, 8, 12).double()
    c = _corpus()
    out = bpc_by_context(model, c, "test", device="cpu", seq_len=8, rows=2)
    nats = {}  # context p -> summed loss, each document alone, one window (carrying state = one long window)
    for a, b in documents(c.doc_starts["test"]):
        if b - a < 2:
            continue
        logits, _ = model(c.ids["test"][None, a:b - 1])
        nll = F.cross_entropy(logits[0], c.ids["test"][a + 1:b], reduction="none")  # (n - 1,) context 1 .. n-1
        for p, v in enumerate(nll.tolist(), start=1):
            nats.setdefault(p, []).append(v)
    total = sum(len(v) for v in nats.values())
    assert out["targets"] == total == sum(n - 1 for n in LENGTHS if n > 1) and out["documents"] == len(LENGTHS)
    assert out["bpc_mean"] == pytest.approx(sum(map(sum, nats.values())) / total / math.log(2), abs=1e-12)
    edges = out["edges"]
    assert edges == [1, 2, 4, 8, 16, 32]
    for k, lo in enumerate(edges):
        hi = edges[k + 1] if k + 1 < len(edges) else math.inf
        vals = [v for p, vs in nats.items() if lo <= p < hi for v in vs]
        assert out["count"][k] == len(vals)
        assert out["bpc"][k] == pytest.approx(sum(vals) / len(vals) / math.log(2), abs=1e-12)
    weighted = sum(n * b for n, b in zip(out["count"], out["bpc"])) / sum(out["count"])
    assert weighted == pytest.approx(out["bpc_mean"], abs=1e-12)


class _Fixed(torch.nn.Module):
    """The same logits at every position whatever it has read (no state)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.as_tensor(logits, dtype=torch.float64))

    def init_state(self, batch_size, device):
        return {}

    def forward(self, x, state=None, resets=None):
        return self.logits.expand(*x.shape, -1), state


def test_a_position_blind_model_gives_flat_bins():
    out = bpc_by_context(_Fixed(torch.zeros(V)), _corpus(), "test", device="cpu", seq_len=8, rows=4)
    assert all(b == pytest.approx(math.log2(V), abs=1e-12) for b in out["bpc"])


def test_a_character_at_context_p_lands_in_the_bin_holding_p():
    edges = [1, 3, 10, 30]
    bin_of = [0] + [max(k for k, e in enumerate(edges) if e <= p) for p in range(1, 80)]
    # every document's character at offset p is the id of its bin: bin k's loss is -log2 q(k)
    lengths = (80, 12, 31, 4)
    ids = torch.tensor([bin_of[p] for n in lengths for p in range(n)])
    starts = torch.zeros(ids.numel(), dtype=torch.bool)
    starts[torch.tensor([sum(lengths[:k]) for k in range(len(lengths))])] = True
    corpus = SimpleNamespace(ids={"test": ids}, doc_starts={"test": starts})
    logits = torch.arange(V, dtype=torch.float64)
    out = bpc_by_context(_Fixed(logits), corpus, "test", device="cpu", seq_len=16, rows=3, edges=edges)
    want = (-torch.log_softmax(logits, 0) / math.log(2)).tolist()
    assert out["bpc"] == pytest.approx(want[:4], abs=1e-12)
    assert out["count"] == [sum(1 for n in lengths for p in range(1, n) if bin_of[p] == k) for k in range(4)]


@pytest.mark.parametrize("identity", [("model.kind=transformer",), ("model.kind=titans", "model.memory=linear"),
                                      ("model.kind=hope", "model.cms_mode=in_forward")])
def test_documents_side_by_side_read_as_each_alone(identity):
    torch.manual_seed(0)
    cfg = apply_overrides(preset("smoke"), [*identity, "model.d_model=16", "model.d_ff=32", "model.n_layers=1",
                                            "model.n_heads=2", "model.mem_chunk=4", "model.cms_chunks=4,8"])
    model = model_for(cfg, V).eval()
    c = _corpus()
    alone = bpc_by_context(model, c, "test", device="cpu", seq_len=8, rows=1)
    together = bpc_by_context(model, c, "test", device="cpu", seq_len=8, rows=len(LENGTHS))
    assert together["count"] == alone["count"]
    assert together["bpc_mean"] == pytest.approx(alone["bpc_mean"], abs=1e-5)
    assert together["bpc"] == pytest.approx(alone["bpc"], abs=1e-5)


def test_edges_must_increase_from_one():
    with pytest.raises(ValueError, match="edges"):
        bpc_by_context(_Fixed(torch.zeros(V)), _corpus(), "test", device="cpu", seq_len=8, edges=[0, 4])
