"""Multi-tensor optimizer kernels run over small slices of the parameters: same maths, more blocks.

PyTorch's fused and foreach optimizer kernels (``multi_tensor_apply``) give each thread block a
chunk of up to 65,536 elements of one tensor. A level of the seed model holds under a million
parameters in a dozen tensors, so its AdamW step runs on about a dozen blocks of a GPU's hundred
or more multiprocessors, bound by each block walking its chunk. The kernels are elementwise (AdamW) or per-tensor
reductions (the norm), so handing them the same tensors cut into flat slices of `SLICE` elements
(views: the updates land in the parameters and states themselves) changes nothing in the
arithmetic and spreads the work over many more blocks.

* `SlicedAdam` / `SlicedAdamW`: ``torch.optim.Adam`` / ``AdamW`` with ``fused=True`` whose step
  calls the same fused kernel on the slices. The state (step, exp_avg, exp_avg_sq) is torch's, so
  checkpoints are interchangeable; the updates are bit-identical to torch's fused step
  (tests/optim/test_sliced.py). Options the slicing does not cover (amsgrad, maximize, tensor lr, a
  non-contiguous tensor, capturable, a grad scaler) fall back to torch's own step.
* `clip_grad_norm`: ``torch.nn.utils.clip_grad_norm_`` (total 2-norm, coefficient
  max_norm / (norm + 1e-6) clamped to 1) with the per-tensor norms taken over the slices; the
  total equals torch's up to float rounding (the squares are summed in another grouping). When
  CUDA gradients tile one flat buffer (`flat_base`: the CUDA-graph step's static gradients, one
  buffer per CMS level) the norm and the scaling are one kernel each on that buffer (`clip_flat`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nlcore.optim.adam_foreach import adam_foreach_, clip_coef

SLICE = 4096  # elements per slice: ~170 slices for the seed model's fast level


def slices(tensors: list[Tensor], size: int = SLICE) -> list[Tensor]:
    """Flat views of each (contiguous) tensor, cut into pieces of at most `size` elements."""
    return [piece for t in tensors for piece in t.view(-1).split(size)]


class SliceCache:
    """The slices of some tensor lists, kept while the same tensors come back: cutting them is a
    few hundred views, host time too long to spend every step. `get` returns None the
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


def flat_base(tensors: list[Tensor]) -> Tensor | None:
    """The 1-D buffer that `tensors` tile exactly, in order, as contiguous views (each starting
    where the previous one ends, together covering all of it); None if they do not."""
    base = tensors[0]._base if tensors else None
    if base is None or base.dim() != 1 or not base.is_contiguous():
        return None
    at = base.storage_offset()
    for t in tensors:
        if t._base is not base or not t.is_contiguous() or t.storage_offset() != at:
            return None
        at += t.numel()
    return base if at == base.storage_offset() + base.numel() else None


def grad_norm(grads: list[Tensor]) -> Tensor:
    """The total 2-norm of `grads` (0-d tensor): one kernel when CUDA gradients tile one flat
    buffer (`flat_base`), else torch's per-tensor norms and their norm."""
    flat = flat_base(grads) if grads and grads[0].is_cuda else None
    if flat is not None:
        return torch.linalg.vector_norm(flat)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def clip_flat(flat: Tensor, max_norm: float) -> Tensor:
    """`clip_grad_norm` of gradients that tile the 1-D buffer `flat`: one norm kernel and one
    scaling kernel. The total is summed in another grouping than torch's per-tensor norms, so it
    may differ from theirs in the last bits: used on CUDA, where the graph step's rounding
    already differs from the eager one's; on CPU the graph emulation stays bit-identical."""
    total = torch.linalg.vector_norm(flat)
    flat.mul_(clip_coef(total, max_norm))
    return total


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float, cache: SliceCache | None = None) -> Tensor:
    """Scale the gradients of `params` in place so their total 2-norm is at most `max_norm`;
    returns the total norm before clipping (a 0-d tensor, no host sync). The slices come from
    `cache` (one per parameter list); without one, or on a cache miss, torch's clip runs."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    flat = flat_base(grads) if grads[0].is_cuda else None  # CPU keeps torch's rounding (see clip_flat)
    if flat is not None:
        return clip_flat(flat, max_norm)
    got = None if cache is None else cache.get([grads])
    if got is None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    (cut,) = got
    total = grad_norm(cut)
    coef = clip_coef(total, max_norm)
    torch._foreach_mul_(cut, coef)
    return total


class _Sliced:
    """Mixin over torch.optim.Adam / AdamW (fused=True): the fused kernel on slices."""

    _decoupled = False

    def _sliceable(self, group: dict) -> bool:
        return (group.get("fused") and not group["amsgrad"] and not group["maximize"]
                and not group.get("capturable") and not isinstance(group["lr"], Tensor)
                and getattr(self, "grad_scale", None) is None and getattr(self, "found_inf", None) is None)

    def compile_update(self, compile_fn) -> None:
        """Run later steps through `compile_fn(adam_foreach_)` (nlcore.optim.adam_foreach: the update as
        foreach ops, fused by inductor) instead of the fused kernel on slices. The first step is
        still torch's (it creates the state)."""
        self._compiled_update = compile_fn(adam_foreach_)

    def clip_in_step(self, total: Tensor, max_norm: float) -> None:
        """Clip the gradients by `total` (their norm) within the next step: fused into the compiled
        update, or applied to the .grad tensors first where that step is torch's."""
        self._pending_clip = (total, max_norm)

    def _apply_pending_clip(self) -> None:
        clip = self.__dict__.pop("_pending_clip", None)
        if clip is not None:
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            torch._foreach_mul_(grads, clip_coef(*clip))

    def _compiled_step(self, group: dict, ps: list[Tensor]) -> None:
        lr = self.__dict__.setdefault("_lr_tensors", {}).get(id(group))
        if lr is None or lr.device != ps[0].device:
            lr = self._lr_tensors[id(group)] = torch.zeros((), device=ps[0].device)
        lr.fill_(group["lr"])  # a kernel argument: no host-device copy
        st = [self.state[p] for p in ps]
        beta1, beta2 = group["betas"]
        self._compiled_update(ps, [p.grad for p in ps], [s["exp_avg"] for s in st], [s["exp_avg_sq"] for s in st],
                              [s["step"] for s in st], lr, beta1=beta1, beta2=beta2, eps=group["eps"],
                              weight_decay=group["weight_decay"],
                              decoupled=group.get("decoupled_weight_decay", self._decoupled),
                              clip=self.__dict__.get("_pending_clip"))

    @torch.no_grad()
    def step(self, closure=None):
        if getattr(self, "_compiled_update", None) is not None and closure is None \
                and all(self._sliceable(g) for g in self.param_groups):
            groups = [(g, [p for p in g["params"] if p.grad is not None]) for g in self.param_groups]
            if all(all(self.state[p] and not p.grad.is_sparse and self.state[p]["step"].device == p.device
                       for p in ps) for _, ps in groups):
                for group, ps in groups:
                    if ps:
                        self._compiled_step(group, ps)
                self.__dict__.pop("_pending_clip", None)
                return None
        self._apply_pending_clip()
        return self._step(closure)

    def _step(self, closure=None):
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
