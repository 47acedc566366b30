"""Held-out bits per character, measured with the same streaming protocol as training.

The split is cut into B contiguous rows and read window by window with the recurrent state
carried under the run's reset policy, exactly as in training (nothing is detached because
nothing is differentiated). Every target character of the covered split counts once:

    bpc = (sum_t -ln p(c_{t+1} | c_<=t)) / (N_targets * ln 2)

Loss is also accumulated per position inside a window, which shows where carried state helps
(the first positions of a window). Everything stays on the device until one final transfer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nlcore.accel.precision import autocast_ctx, loss_precision
from nlcore.config import StateConfig
from nlcore.state import DocCuts, StateCarrier


@torch.no_grad()
def evaluate(model, stream, state_cfg: StateConfig, *, device, amp: bool = False,
             max_windows: int | None = None, doc_cuts: DocCuts | None = None,
             by_position: bool = False) -> dict:
    """Held-out bpc over the first `max_windows` windows of `stream` (all when None)."""
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
        with autocast_ctx(device, amp):
            kw = {"targets": batch.y} if getattr(model, "uses_targets", False) else {}
            logits, new_state = model(batch.x, state, resets, **kw)
        nll = F.cross_entropy(loss_precision(logits).flatten(0, 1), batch.y.flatten(), reduction="none")
        nll = nll.view_as(batch.y)  # (B, T)
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
