"""Held-out bits per character, measured with the same streaming protocol as training.

The split is cut into B contiguous rows and read window by window with the recurrent state
carried under the run's reset policy, exactly as in training (nothing is detached because
nothing is differentiated). Every target character of the covered split counts once:

    bpc = (sum_t -ln p(c_{t+1} | c_<=t)) / (N_targets * ln 2)

Loss is also accumulated per position inside a window, which shows where carried state helps
(the first positions of a window). Everything stays on the device until one final transfer.

`bpc_by_context` reads a split document by document instead (each from its first character with
the zero state) and bins the loss by how many characters of its document a prediction has seen.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from nlcore.accel.precision import autocast_ctx, loss_precision
from nlcore.config import StateConfig
from nlcore.state import DocCuts, StateCarrier

IGNORE = -100  # a target nobody reads (cross_entropy's ignore_index)


def window_nll(model, x, y, state, resets, *, device, amp: bool) -> tuple[torch.Tensor, dict]:
    """(nll (B, T), new state) of one window: the next-character losses per position, computed in
    fp32 from logits made under the run's autocast (`GraphedEval` replays this same function)."""
    with autocast_ctx(device, amp):
        kw = {"targets": y} if getattr(model, "uses_targets", False) else {}
        logits, new_state = model(x, state, resets, **kw)
    nll = F.cross_entropy(loss_precision(logits).flatten(0, 1), y.flatten(), reduction="none")
    return nll.view_as(y), new_state


@torch.no_grad()
def evaluate(model, stream, state_cfg: StateConfig, *, device, amp: bool = False,
             max_windows: int | None = None, doc_cuts: DocCuts | None = None,
             by_position: bool = False, graph=None) -> dict:
    """Held-out bpc over the first `max_windows` windows of `stream` (all when None). `graph`: a
    `nlcore.accel.cuda_graph.GraphedEval` of this model and the stream's shape that replays the
    windows it can (the same numbers; the others run eagerly)."""
    was_training = model.training
    model.eval()
    n = len(stream) if max_windows is None else min(max_windows, len(stream))
    carrier = StateCarrier(model, state_cfg, stream.batch_size, device, doc_cuts)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    pos_sum = pos_cnt = None
    for i in range(n):
        batch = stream[i]
        state, resets = carrier.begin(i, batch.doc_start)
        replayed = graph.window(batch.x, batch.y, state, resets) if graph is not None else None
        # (B, T); a replayed one is static: read before the next window
        nll, new_state = replayed or window_nll(model, batch.x, batch.y, state, resets, device=device, amp=amp)
        total += nll.sum(dtype=torch.float64)
        count += batch.y.numel()
        if by_position:
            p = nll.sum(0, dtype=torch.float64)  # (T,)
            if pos_sum is None:
                pos_sum = torch.zeros(stream.seq_len, dtype=torch.float64, device=device)
                pos_cnt = torch.zeros(stream.seq_len, dtype=torch.float64, device=device)
            pos_sum[: p.shape[0]] += p
            pos_cnt[: p.shape[0]] += batch.y.shape[0]
        carrier.end(new_state)
    model.train(was_training)
    nats = float(total) / max(count, 1)
    out = {"bpc": nats / math.log(2), "nats": nats, "targets": count, "windows": n}
    if by_position and pos_sum is not None:
        out["bpc_by_position"] = (pos_sum / pos_cnt.clamp_min(1) / math.log(2)).cpu().tolist()
    return out


def unigram_bpc(corpus, split: str = "valid") -> float:
    """Bits per character of the unigram model on `split`: train-split character frequencies,
    add-one smoothed, p(c) = (n_c + 1) / (N + V); the level any trained model must beat."""
    vocab = corpus.tokenizer.vocab_size
    counts = torch.bincount(corpus.ids["train"], minlength=vocab).double() + 1.0  # (V,) add-one
    log_p = (counts / counts.sum()).log2()  # (V,)
    return float(-log_p[corpus.ids[split]].mean())  # mean -log2 p(c) over the split


def log_edges(longest: int) -> list[int]:
    """Bin edges 1, 2, 4, ... up to `longest`: bin k holds the contexts p with edges[k] <= p < edges[k+1]
    (the last bin ends at `longest`)."""
    edges = [1]
    while edges[-1] * 2 <= longest:
        edges.append(edges[-1] * 2)
    return edges


def documents(doc_starts: torch.Tensor) -> list[tuple[int, int]]:
    """(start, stop) of every document of a split from its (N,) document-start mask; text before the
    first start is not a document."""
    starts = torch.nonzero(doc_starts).flatten().tolist()
    return list(zip(starts, [*starts[1:], doc_starts.numel()]))


@torch.no_grad()
def bpc_by_context(model, corpus, split: str = "test", *, device, seq_len: int = 512, rows: int = 64,
                   edges: list[int] | None = None, amp: bool = False) -> dict:
    """Held-out bpc against context: the bits of each prediction binned by the characters of its
    document it has read.

    Every document of `split` (``corpus.doc_starts``: WikiText-2's articles) is read from its first
    character with the zero state, in windows of `seq_len` with the state carried, as one row of a
    batch. The prediction of the character at offset p >= 1 of its document has read p characters
    (offsets 0 .. p-1) and lands in bin k with edges[k] <= p < edges[k+1] (the last bin is open);
    a document's last character predicts nothing, since the next document's first character does
    not continue it. So every target counts once and

        bpc_k = sum_{p in bin k} -log2 q(c_p | c_<p) / count_k,   sum_k count_k bpc_k / sum_k count_k = bpc.

    Documents are read `rows` at a time, longest first, each padded to its group's longest with
    inputs whose targets are ignored: rows are independent and the models causal, so a padded
    position changes no counted one. Returns the edges, bpc and count per bin (bpc None where empty),
    the overall bpc, the targets and the documents.
    """
    docs = sorted(documents(corpus.doc_starts[split]), key=lambda d: d[0] - d[1])  # longest first
    longest = max((b - a for a, b in docs), default=1)
    edges = list(edges) if edges is not None else log_edges(max(longest - 1, 1))
    if not edges or edges[0] < 1 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bpc_by_context: edges must increase from at least 1, got {edges}")
    ids = corpus.ids[split]
    was_training = model.training
    model.eval()
    uses_targets = getattr(model, "uses_targets", False)
    nats = torch.zeros(longest, dtype=torch.float64, device=device)  # (P,) summed loss at each context p
    count = torch.zeros(longest, dtype=torch.float64, device=device)  # (P,) targets at each context p
    for g in range(0, len(docs), rows):
        group = docs[g: g + rows]
        width = group[0][1] - group[0][0]  # the group's longest document
        n_win = max(1, math.ceil((width - 1) / seq_len))
        x = torch.zeros(len(group), n_win * seq_len, dtype=torch.long)  # (B, W*T) inputs, 0-padded
        y = torch.full_like(x, IGNORE)  # (B, W*T) targets, IGNORE where padded
        for r, (a, b) in enumerate(group):
            x[r, : b - a - 1] = ids[a: b - 1]
            y[r, : b - a - 1] = ids[a + 1: b]
        x, y = x.to(device), y.to(device)
        state = model.init_state(len(group), device)
        for i in range(n_win):
            xi, yi = x[:, i * seq_len:(i + 1) * seq_len], y[:, i * seq_len:(i + 1) * seq_len]  # (B, T)
            with autocast_ctx(device, amp):
                logits, state = model(xi, state, None, **({"targets": yi} if uses_targets else {}))
            nll = F.cross_entropy(loss_precision(logits).flatten(0, 1), yi.flatten(), reduction="none",
                                  ignore_index=IGNORE).view_as(yi)  # (B, T), 0 where ignored
            hi = min((i + 1) * seq_len, longest)  # column j of the window predicts context i*T + j + 1
            nats[i * seq_len: hi] += nll.sum(0, dtype=torch.float64)[: hi - i * seq_len]
            count[i * seq_len: hi] += (yi != IGNORE).sum(0).double()[: hi - i * seq_len]
    model.train(was_training)
    nats, count = nats.cpu().numpy(), count.cpu().numpy()  # index p - 1 holds context p
    k = np.searchsorted(np.asarray(edges), np.arange(1, longest + 1), side="right") - 1  # (P,) bin of p
    keep = k >= 0  # contexts below edges[0] fall in no bin
    bin_nats = np.bincount(k[keep], nats[keep], minlength=len(edges))
    bin_count = np.bincount(k[keep], count[keep], minlength=len(edges))
    total = float(count.sum())
    return {"edges": edges, "count": [int(c) for c in bin_count],
            "bpc": [float(n / c / math.log(2)) if c else None for n, c in zip(bin_nats, bin_count)],
            "bpc_mean": float(nats.sum() / max(total, 1) / math.log(2)), "targets": int(total),
            "documents": len(docs), "seq_len": seq_len}
