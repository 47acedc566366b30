r"""Continuum Memory System (CMS) as a training-time update schedule.

Nested Learning (Behrouz et al., NeurIPS 2025), Sec. 3, Eq. 31: level :math:`\ell` with chunk
size :math:`C_\ell` keeps its parameters frozen inside a chunk and, at steps
:math:`i \equiv 0 \pmod{C_\ell}` (1-based), applies the gradients accumulated over the chunk,

.. math::
    \theta^{(\ell)}_{i+1} = \theta^{(\ell)}_i - \mathrm{Opt}_\ell\Big(
        \textstyle\mathrm{agg}_{t=i-C_\ell+1}^{i} \nabla_\theta L(\theta^{(\ell)}_{i-C_\ell+1}; x_t)\Big)

with agg = sum (the paper) or mean. Every gradient in a chunk is taken at the chunk-start
parameters because nothing touches the level in between (PyTorch's `.grad` accumulation does
the summing; this class only decides when to step and when to zero).

Which aggregation and learning-rate policy suit which optimizer:

* SGD / SGD-momentum: the step is linear in the gradient, so `sum` makes a level with chunk C
  move about C times further per update than `mean`. `sum` + lr/C ("divide_by_chunk") equals
  `mean` + lr: either keeps the per-character learning rate of every level equal.
* Adam / AdamW: the step is invariant to the gradient's scale (up to eps), so `sum` and `mean`
  give the same update and dividing lr by C just shrinks the step C-fold; with C updates
  C-times rarer the slow level learns about C^2 less than the fast one. That is what froze the
  prototype's slow levels (lr/C with Adam at C = 256: 65,536x less). Use lr_policy="none".
* The delta rule (nlcore.optim.delta_rule): it consumes its own per-token statistics; see there.

Every parameter of the model must belong to exactly one level (checked at construction), so an
untrained embedding or head cannot happen silently. Telemetry per level: update count and last
update step (host counters, no device sync), gradient norm at each update and the norm of the
parameter change (device tensors, read at log time; the pre-update copy goes to one persistent
buffer per level in one foreach launch, not one clone per parameter). With ``change_every=k``
(the trainer passes its log interval) the change norm is measured only on each level's last
update at or before every multiple of k (the one the log reports), sparing the copy, difference
and norm launches of the other updates.

``zero_grad="inplace"`` (the CUDA-graph step, nlcore.accel.cuda_graph): after an update the
level's ``.grad`` tensors are zeroed in place instead of set to None, so they stay the static
buffers a CUDA graph accumulates into. Same arithmetic (0 + g = g): every trainable parameter
receives a gradient in every backward pass of the nlcore models.

``grad_sync(name, params, optimizer, step)`` (data parallelism, nlcore.accel.ddp) runs right
before a level's update and averages its accumulated gradients (and a delta rule's statistics)
across ranks in place; without it nothing is communicated.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from nlcore.config import CMSConfig, LevelConfig
from nlcore.errors import NonFiniteError
from nlcore.optim.sliced import SliceCache, clip_grad_norm, flat_base, grad_norm

NamedParams = Sequence[tuple[str, nn.Parameter]]


def build_optimizer(spec: LevelConfig, params: list[nn.Parameter], *,
                    named_modules: dict[str, nn.Module] | None = None,
                    fused: bool | None = None, world_size: int = 1) -> torch.optim.Optimizer | None:
    """The optimizer of one level (None for a frozen level); `world_size`: data-parallel ranks."""
    if spec.optimizer == "none":
        return None
    kw: dict = {}
    if fused is not None and spec.optimizer in ("adam", "adamw"):
        kw["fused"] = fused
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if fused and spec.optimizer in ("adam", "adamw"):  # the fused kernel on small slices: more blocks
        from nlcore.optim.sliced import SlicedAdam, SlicedAdamW

        cls = SlicedAdam if spec.optimizer == "adam" else SlicedAdamW
        return cls(params, lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps,
                   weight_decay=spec.weight_decay, fused=True)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps,
                                weight_decay=spec.weight_decay, **kw)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps,
                                 weight_decay=spec.weight_decay, **kw)
    if spec.optimizer in ("delta", "delta_batch_mean"):
        from nlcore.optim.delta_rule import DeltaRule

        ids = {id(p) for p in params}
        mods = {n: m for n, m in (named_modules or {}).items()
                if isinstance(m, nn.Linear) and id(m.weight) in ids}
        if not mods:
            raise ValueError(f"cms.levels.{spec.name}.optimizer: the delta rule needs nn.Linear layers in the level")
        # The per-token rule (Eq. 29, normalised) on the level's Linear weights, averaged over the
        # chunk's tokens; the prototype's batch-mean variant for comparison. Biases and norms:
        # SGD with the level's lr and momentum on the (clipped) accumulated gradient.
        return DeltaRule(params, modules=mods, lr=spec.lr,
                         mode="summed" if spec.optimizer == "delta" else "batch_mean",
                         aggregation="mean", grad_scale="per_token", fallback="sgd",
                         fallback_kwargs={"momentum": spec.momentum}, world_size=world_size)
    raise ValueError(f"cms.levels.{spec.name}.optimizer: unknown {spec.optimizer!r}")


class CMS:
    """Per-level optimizers stepping on their own chunk schedule.

    Usage per training step ``i`` (1-based): ``loss.backward(); cms.after_backward(i)``.
    At the end: ``cms.finish(num_steps)`` handles a final partial chunk (flush or discard).
    """

    def __init__(self, cfg: CMSConfig, levels: dict[str, NamedParams], *,
                 model: nn.Module | None = None,
                 lr_scale: Callable[[int], float] | None = None,
                 fused: bool | None = None, zero_grad: str = "none", change_every: int = 1,
                 grad_sync: Callable[[str, list[nn.Parameter], torch.optim.Optimizer | None, int], None] | None = None,
                 world_size: int = 1) -> None:
        cfg.validate()
        if isinstance(change_every, bool) or not isinstance(change_every, int) or change_every < 1:
            raise ValueError(f"CMS change_every must be an int >= 1, got {change_every!r}")
        self.change_every = change_every
        if zero_grad not in ("none", "inplace"):  # "inplace": static .grad buffers (nlcore.accel.cuda_graph)
            raise ValueError(f"CMS zero_grad must be 'none' or 'inplace', got {zero_grad!r}")
        self.cfg = cfg
        self.zero_grad = zero_grad
        self.lr_scale = lr_scale or (lambda step: 1.0)
        spec_names = [lv.name for lv in cfg.levels]
        for name in levels:
            if name not in spec_names:
                raise ValueError(f"cms.levels: the model assigns parameters to unknown level {name!r}; "
                                 f"configured levels are {spec_names}")
        seen: dict[int, str] = {}
        for name, named in levels.items():
            for pname, p in named:
                if id(p) in seen:
                    raise ValueError(f"cms: parameter {pname!r} belongs to two levels ({seen[id(p)]!r} and {name!r})")
                seen[id(p)] = name
        if model is not None:
            missing = [n for n, p in model.named_parameters() if id(p) not in seen]
            if missing:
                raise ValueError(f"cms: parameters in no level (they would never train): {missing}")
        named_modules = dict(model.named_modules()) if model is not None else None
        self.specs: dict[str, LevelConfig] = {lv.name: lv for lv in cfg.levels}
        self.params: dict[str, list[nn.Parameter]] = {}
        self.optimizers: dict[str, torch.optim.Optimizer | None] = {}
        for lv in cfg.levels:
            plist = [p for _, p in levels.get(lv.name, [])]
            self.params[lv.name] = plist
            if lv.optimizer == "none":
                for p in plist:  # an explicitly frozen level (prototype compatibility only)
                    p.requires_grad_(False)
            self.optimizers[lv.name] = build_optimizer(lv, plist, named_modules=named_modules, fused=fused,
                                                       world_size=world_size) if plist else None
        self.base_lr = {n: self._policy_lr(s) for n, s in self.specs.items()}
        self.updates = {n: 0 for n in self.specs}  # update count (host)
        self.last_update = {n: 0 for n in self.specs}  # last update step (host)
        self.pending = {n: 0 for n in self.specs}  # gradients accumulated since the last update
        self._grad_norms: dict[str, list[tuple[int, torch.Tensor]]] = {n: [] for n in self.specs}
        self._change_norms: dict[str, list[tuple[int, torch.Tensor]]] = {n: [] for n in self.specs}
        self._before: dict[str, list[torch.Tensor]] = {}  # per level: persistent pre-update copy
        self._clip_cache = {n: SliceCache() for n in self.specs}  # per level: its gradients' slices
        self.grad_sync = grad_sync  # see the module docstring

    # ------------------------------------------------------------------ schedule
    def _policy_lr(self, spec: LevelConfig) -> float:
        return spec.lr / spec.chunk if self.cfg.lr_policy == "divide_by_chunk" else spec.lr

    def due(self, step: int) -> list[str]:
        """Levels that update at 1-based `step` (C divides step)."""
        return [n for n, s in self.specs.items() if step % s.chunk == 0]

    def current_lr(self, name: str, step: int) -> float:
        return self.base_lr[name] * self.lr_scale(step)

    def records_change(self, name: str, step: int) -> bool:
        """Whether the update of level `name` at `step` measures its change norm: it is the level's
        last update at or before the next multiple of `change_every` (every update when that is 1)."""
        k = self.change_every
        return step + self.specs[name].chunk > -(-step // k) * k

    # ------------------------------------------------------------------ stepping
    def after_backward(self, step: int) -> list[str]:
        """Count one more accumulated gradient per level; update the levels due at `step`."""
        for n in self.specs:
            self.pending[n] += 1
        due = self.due(step)
        for n in due:
            self._update(n, step)
        return due

    def finish(self, step: int) -> list[str]:
        """Handle the final partial chunk of every level (cfg.partial: flush or discard)."""
        done = []
        for n in self.specs:
            if self.pending[n] == 0:
                continue
            if self.cfg.partial == "flush":
                self._update(n, step)
                done.append(n)
            else:
                self._zero(n)
                self.pending[n] = 0
        return done

    def _zero(self, name: str) -> None:
        if self.zero_grad == "inplace":  # keep the .grad tensors (static buffers of a CUDA graph)
            grads = [p.grad for p in self.params[name] if p.grad is not None]
            flat = flat_base(grads) if grads else None
            if flat is not None:  # the graph step's static buffers tile one flat buffer: one fill
                flat.zero_()
            elif grads:
                torch._foreach_zero_(grads)
        else:
            for p in self.params[name]:
                p.grad = None
        opt = self.optimizers[name]
        if opt is not None and hasattr(opt, "clear_statistics"):
            opt.clear_statistics()

    @torch.no_grad()
    def _update(self, name: str, step: int) -> None:
        opt, params, k = self.optimizers[name], self.params[name], self.pending[name]
        self.pending[name] = 0
        if opt is None:
            self._zero(name)
            return
        if self.grad_sync is not None:  # one all-reduce per level update across data-parallel ranks
            self.grad_sync(name, params, opt, step)
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            if self.cfg.aggregation == "mean" and k > 1:
                torch._foreach_mul_(grads, 1.0 / k)  # mean over the chunk's k gradients
            if self.cfg.grad_clip > 0 and getattr(opt, "_compiled_update", None) is not None:
                gnorm = grad_norm(grads)  # the clip is fused into the compiled update (nlcore.optim.adam_foreach)
                opt.clip_in_step(gnorm, self.cfg.grad_clip)
            elif self.cfg.grad_clip > 0:
                gnorm = clip_grad_norm(params, self.cfg.grad_clip, self._clip_cache[name])  # nlcore.optim.sliced
            else:
                gnorm = grad_norm(grads)
            self._grad_norms[name].append((step, gnorm))
        record = self.records_change(name, step)
        if record:
            now = [p.detach() for p in params]
            before = self._before.get(name)
            if before is None or (before[0].device, before[0].dtype) != (now[0].device, now[0].dtype):
                before = self._before[name] = [torch.empty_like(p) for p in now]
            torch._foreach_copy_(before, now)  # one launch instead of a clone per parameter
        lr = self.current_lr(name, step)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        if record:
            torch._foreach_sub_(before, [p.detach() for p in params])  # −Δθ: the same norm, no new tensors
            delta = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before)))
            self._change_norms[name].append((step, delta))
        self._zero(name)
        self.updates[name] += 1
        self.last_update[name] = step

    # ------------------------------------------------------------------ telemetry
    def drain_telemetry(self) -> dict[str, dict]:
        """Per level: updates, last update step, lr, and the grad / change norms since the last
        drain (moved to the host in one transfer). Raises NonFiniteError naming step and level."""
        out = {}
        tensors, index = [], []
        for n in self.specs:
            for kind, buf in (("grad", self._grad_norms[n]), ("change", self._change_norms[n])):
                for step, t in buf:
                    tensors.append(t.detach().double().reshape(()))
                    index.append((n, kind, step))
            self._grad_norms[n], self._change_norms[n] = [], []
        values = torch.stack(tensors).cpu().tolist() if tensors else []
        per: dict[str, dict[str, list[tuple[int, float]]]] = {n: {"grad": [], "change": []} for n in self.specs}
        for (n, kind, step), v in zip(index, values):
            per[n][kind].append((step, v))
        bad = sorted((step, n) for n in per for step, v in per[n]["grad"] if not math.isfinite(v))
        if bad:
            step, n = bad[0]
            raise NonFiniteError(f"training diverged: non-finite gradient at step {step} in level {n!r}: lower the "
                                 f"learning rates or clip gradients (cms.grad_clip)", step=step, level=n)
        for n in self.specs:
            g = per[n]["grad"]
            d = per[n]["change"]
            out[n] = {
                "updates": self.updates[n], "last_update": self.last_update[n],
                "grad_norm": g[-1][1] if g else None, "change_norm": d[-1][1] if d else None,
                "grad_norms": g, "change_norms": d,
            }
        return out

    def lr_table(self, step: int) -> dict[str, float]:
        return {n: self.current_lr(n, step) for n in self.specs}

    def params_by_level(self) -> dict[str, int]:
        return {n: sum(p.numel() for p in ps) for n, ps in self.params.items()}

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        """Optimizer states, counters AND the pending accumulated gradients of every level."""
        return {
            # deep copies: an optimizer's state_dict aliases its live buffers
            "optimizers": {n: (copy.deepcopy(o.state_dict()) if o is not None else None)
                           for n, o in self.optimizers.items()},
            "updates": dict(self.updates), "last_update": dict(self.last_update), "pending": dict(self.pending),
            "grads": {n: [None if p.grad is None else p.grad.detach().clone() for p in ps]
                      for n, ps in self.params.items()},
        }

    def load_optimizer_states(self, sd: dict) -> None:
        """Only the optimizers' states of `sd` (a `state_dict`): moments and their step counts carry
        over into a new run while its counters and pending gradients start at zero."""
        for n, o in self.optimizers.items():
            if o is not None and sd["optimizers"].get(n) is not None:
                o.load_state_dict(sd["optimizers"][n])

    def load_state_dict(self, sd: dict) -> None:
        self.load_optimizer_states(sd)
        self.updates = dict(sd["updates"])
        self.last_update = dict(sd["last_update"])
        self.pending = dict(sd["pending"])
        for n, ps in self.params.items():
            for p, g in zip(ps, sd["grads"][n]):
                p.grad = None if g is None else g.to(device=p.device, dtype=p.dtype).clone()


def split_named(named: Iterable[tuple[str, nn.Parameter]], owner: Callable[[str], str]) -> dict[str, list]:
    """Group named parameters by `owner(name) -> level`."""
    out: dict[str, list] = {}
    for n, p in named:
        out.setdefault(owner(n), []).append((n, p))
    return out
