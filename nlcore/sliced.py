"""Multi-tensor optimizer kernels run over small slices of the parameters: same maths, more blocks.

PyTorch's fused and foreach optimizer kernels (``multi_tensor_apply``) give each thread block a
chunk of up to 65,536 elements of one tensor. A level of the seed model holds ~0.7 M parameters
in a dozen tensors, so its AdamW step ran on about a dozen blocks of an H100's 132 SMs and took
~46 µs, bound by each block walking its chunk. The kernels are elementwise (AdamW) or per-tensor
reductions (the norm), so handing them the same tensors cut into flat slices of `SLICE` elements
(views: the updates land in the parameters and states themselves) changes nothing in the
arithmetic and spreads the work over many more blocks.

* `SlicedAdam` / `SlicedAdamW`: ``torch.optim.Adam`` / ``AdamW`` with ``fused=True`` whose step
  calls the same fused kernel on the slices. The state (step, exp_avg, exp_avg_sq) is torch's, so
  checkpoints are interchangeable; the updates are bit-identical to torch's fused step
  (tests/test_sliced.py). Options the slicing does not cover (amsgrad, maximize, tensor lr, a
  non-contiguous tensor, capturable, a grad scaler) fall back to torch's own step.
* `clip_grad_norm`: ``torch.nn.utils.clip_grad_norm_`` (total 2-norm, coefficient
  max_norm / (norm + 1e-6) clamped to 1) with the per-tensor norms taken over the slices; the
  total equals torch's up to float rounding (the squares are summed in another grouping).
"""

from __future__ import annotations

import torch
from torch import Tensor

SLICE = 4096  # elements per slice: ~170 slices for the seed model's fast level


def slices(tensors: list[Tensor], size: int = SLICE) -> list[Tensor]:
    """Flat views of each (contiguous) tensor, cut into pieces of at most `size` elements."""
    return [piece for t in tensors for piece in t.view(-1).split(size)]


class SliceCache:
    """The slices of some tensor lists, kept while the same tensors come back: cutting them is a
    few hundred views (~1 ms of host time), too slow to redo every step. `get` returns None the
    first time a set of tensors is seen (the caller then runs the plain kernel) and the cached
    slices when the same tensors (same storage and size) come again on the next call: the
    CUDA-graph step's static gradient buffers. An eager step that allocates fresh gradients
    never pays for slicing. The cached views keep their storage alive, so a storage address seen
    again while cached is the same storage."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.cut: list[list[Tensor]] | None = None

    def get(self, lists: list[list[Tensor]], per_slice: list[Tensor] | None = None) -> list[list[Tensor]] | None:
        """The slices of each list (all lists shaped alike); with `per_slice` (one tensor per entry
        of a list) one more list repeating per_slice[i] once for each slice of entry i."""
        every = lists + ([per_slice] if per_slice is not None else [])
        key = tuple((t.data_ptr(), t.numel()) for ts in every for t in ts)
        if key != self.key:
            self.key, self.cut = key, None
            return None
        if self.cut is None:
            if not all(t.is_contiguous() for ts in lists for t in ts):
                return None
            self.cut = [slices(ts) for ts in lists]
            if per_slice is not None:
                self.cut.append([x for x, t in zip(per_slice, lists[0]) for _ in range(-(-t.numel() // SLICE))])
        return self.cut


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float, cache: SliceCache | None = None) -> Tensor:
    """Scale the gradients of `params` in place so their total 2-norm is at most `max_norm`;
    returns the total norm before clipping (a 0-d tensor, no host sync). The slices come from
    `cache` (one per parameter list); without one, or on a cache miss, torch's clip runs."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    got = None if cache is None else cache.get([grads])
    if got is None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    (cut,) = got
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(cut)))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(cut, coef)
    return total


class _Sliced:
    """Mixin over torch.optim.Adam / AdamW (fused=True): the fused kernel on slices."""

    _decoupled = False

    def _sliceable(self, group: dict) -> bool:
        return (group.get("fused") and not group["amsgrad"] and not group["maximize"]
                and not group.get("capturable") and not isinstance(group["lr"], Tensor)
                and getattr(self, "grad_scale", None) is None and getattr(self, "found_inf", None) is None)

    @torch.no_grad()
    def step(self, closure=None):
        if not all(self._sliceable(g) for g in self.param_groups):
            return super().step(closure)
        if closure is not None:
            return super().step(closure)
        plans = []
        for group in self.param_groups:  # decide for every group before stepping any
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            if any(not self.state[p] or p.grad.is_sparse for p in ps):  # torch's step creates the state
                return super().step(closure)
            steps = [self.state[p]["step"] for p in ps]
            tensors = [ps, [p.grad for p in ps], [self.state[p]["exp_avg"] for p in ps],
                       [self.state[p]["exp_avg_sq"] for p in ps]]
            cache = self.__dict__.setdefault("_slice_caches", {}).setdefault(id(group), SliceCache())
            cut = cache.get(tensors, per_slice=steps)  # + each slice's step: its tensor's
            if cut is None:  # new tensors (or not sliceable): torch's own step for this call
                return super().step(closure)
            plans.append((group, steps, cut))
        for group, steps, cut in plans:
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            decoupled = group.get("decoupled_weight_decay", self._decoupled)
            kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
            kernel(*cut[:4], [], cut[4],
                   amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                   eps=group["eps"], maximize=False, grad_scale=None, found_inf=None)
        return None


class SlicedAdam(_Sliced, torch.optim.Adam):
    """torch.optim.Adam(fused=True), its fused kernel run on slices (see the module docstring)."""


class SlicedAdamW(_Sliced, torch.optim.AdamW):
    """torch.optim.AdamW(fused=True), its fused kernel run on slices (see the module docstring)."""

    _decoupled = True
