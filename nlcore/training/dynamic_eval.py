"""Dynamic evaluation (Krause et al., 2018, "Dynamic Evaluation of Neural Sequence Models"):
held-out bpc of a model that keeps learning from the stream it is scored on.

The split is read exactly as ``nlcore.training.evaluate.evaluate`` reads it (B contiguous rows, window
by window, the recurrent state carried under the run's reset policy and detached between
windows, every target counted once, bf16 autocast on CUDA when ``amp``, the loss in float32).
The difference: after window w has been scored, the parameters take one plain SGD step on
that window's loss, so window w+1 is predicted by the adapted model. Per window w:

    score:   ℓ_w = Σ_{t ∈ w} -ln p_{θ_w}(c_{t+1} | c_≤t)              (counted; uses θ_w only)
    update:  θ_{w+1} = θ_w − lr · ∇_θ L_w(θ_w) + decay · (θ_0 − θ_w),   L_w = ℓ_w / (B·T)

θ_0 are the trained parameters; the decay term pulls back toward them (Krause et al.'s global
prior, in its plain form: no RMS normalisation of the step), and decay = 0 is plain SGD dynamic
evaluation. Window w's score is computed before any update that has seen window w, and the
forward that scores it is the one whose loss is backpropagated (one forward + backward per
window). The update covers every parameter with ``requires_grad``; the caller's model is left
untouched: the work happens on a deep copy (without the caller's forward hooks, surprise tap
and compiled parts, which belong to the caller's training objects). Models that read the targets
in their forward (``uses_targets``: HOPE) get them, as in training and static evaluation.

    bpc = (Σ_w ℓ_w) / (N_targets · ln 2)

Nothing synchronises with the device per window; the total is read once at the end.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nlcore.accel.precision import autocast_ctx, loss_precision
from nlcore.config import StateConfig
from nlcore.state import DocCuts, StateCarrier

# per-module hook tables the caller's training objects fill (delta-rule recording, ...): not copied
_HOOK_TABLES = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


def detached_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `model` without hooks, surprise tap, compiled parts and gradients."""
    memo: dict = {}
    for m in model.modules():
        for name in _HOOK_TABLES:
            table = m.__dict__.get(name)
            if table is not None:
                memo[id(table)] = type(table)()  # an empty table of the same kind
    compiled = model.__dict__.get("_compiled")
    if compiled is not None:  # compiled closures call the caller's bound methods: drop them
        memo[id(compiled)] = {}
    if model.__dict__.get("tap_fn") is not None:
        memo[id(model.__dict__["tap_fn"])] = None
    twin = copy.deepcopy(model, memo)
    twin.__dict__.pop("_compiled", None)
    for p in twin.parameters():
        p.grad = None
    return twin


def dynamic_evaluate(model, stream, state_cfg: StateConfig, *, lr: float, decay: float = 0.0, device,
                     amp: bool = False, max_windows: int | None = None, doc_cuts: DocCuts | None = None,
                     grad_sync: Callable[[list[torch.Tensor]], None] | None = None,
                     progress: bool = False, return_model: bool = False) -> dict:
    """Dynamic-evaluation bpc over the first `max_windows` windows of `stream` (all when None).

    Returns evaluate's keys (bpc, nats, targets, windows) plus lr and decay; with
    `return_model=True` also "model", the adapted copy (θ after the last window's update).
    `grad_sync(grads)`, if given, replaces each rank's gradients in place by their average over
    ranks before every update (data parallel: every rank then takes the one-process step).
    """
    if lr < 0.0:
        raise ValueError(f"dynamic_eval_lr: must be >= 0, got {lr}")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"dynamic_eval_decay: must be in [0, 1), got {decay}")
    twin = detached_copy(model)
    twin.eval()  # as static evaluation: no dropout
    if lr > 0.0:  # cuDNN computes an RNN's backward only in training mode: RNN modules train, alone
        for m in twin.modules():
            if isinstance(m, nn.RNNBase):
                if m.num_layers > 1 and m.dropout > 0:
                    raise ValueError("dynamic evaluation: an RNN with inter-layer dropout would drop in "
                                     "training mode; set its dropout to 0")
                m.train()  # a single-layer (or dropout-free) RNN computes the same in either mode
    params = [p for p in twin.parameters() if p.requires_grad]
    theta0 = [p.detach().clone() for p in params]  # θ_0, the prior the decay pulls toward
    adapt = lr > 0.0 and len(params) > 0  # lr = 0: θ_w = θ_0 for every w, no backward needed
    n = len(stream) if max_windows is None else min(max_windows, len(stream))
    carrier = StateCarrier(twin, state_cfg, stream.batch_size, device, doc_cuts)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for i in tqdm(range(n), disable=not progress, desc="dynamic eval", unit="window"):
        batch = stream[i]
        state, resets = carrier.begin(i, batch.doc_start)
        with torch.enable_grad():
            with autocast_ctx(device, amp):
                kw = {"targets": batch.y} if getattr(twin, "uses_targets", False) else {}
                logits, new_state = twin(batch.x, state, resets, **kw)  # with θ_w
            nll = F.cross_entropy(loss_precision(logits).flatten(0, 1), batch.y.flatten(), reduction="none")
            total += nll.detach().sum(dtype=torch.float64)  # ℓ_w: scored before any update sees window w
            count += batch.y.numel()
            if adapt:
                grads = torch.autograd.grad(nll.mean(), params, allow_unused=True)  # ∇_θ L_w(θ_w)
        if adapt:
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            if grad_sync is not None:
                grad_sync(grads)
            with torch.no_grad():
                if decay > 0.0:
                    torch._foreach_lerp_(params, theta0, decay)  # θ_w + decay · (θ_0 − θ_w)
                torch._foreach_add_(params, grads, alpha=-lr)  # − lr · ∇_θ L_w(θ_w)
        carrier.end(new_state)  # detached: gradients stay within a window
    nats = float(total) / max(count, 1)
    out = {"bpc": nats / math.log(2), "nats": nats, "targets": count, "windows": n, "lr": lr, "decay": decay}
    if return_model:
        out["model"] = twin
    return out
