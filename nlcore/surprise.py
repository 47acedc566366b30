r"""The surprise objective: regress each level's output onto its own local surprise signal.

Nested Learning (Behrouz et al., NeurIPS 2025) §2.2: u = ∇_y L is the "local surprise signal"
of a layer with output y; §2.7 (Eq. 27) replaces the dot-product memory objective by the L2
regression ‖W x − ∇_y L‖². As an auxiliary loss on the tapped level outputs y_ℓ
(``SequenceModel.tap``), the form the prototype trained with:

.. math::
    \mathcal{L}_{tot} = L + \sum_{\ell:\lambda_\ell>0} \lambda_\ell\,
        \mathrm{MSE}\big(y_\ell,\ \mathrm{sg}[\mathrm{clip}(\nabla_{y_\ell} L, -c, c)]\big)

L is the mean cross-entropy over the B·T characters (the trainer's ``loss``), MSE the mean
over all N_ℓ = numel(y_ℓ) elements, sg a stop-gradient, and ∇_{y_ℓ}L the gradient of L ALONE.

Two implementations with the same parameter gradients:

* ``impl="reference"`` (the prototype's form, literally): ``g = autograd.grad(L, ys,
  create_graph=True)``, t = sg(clip(g)), backpropagate L + Σ λ·MSE(y, t). create_graph builds a
  second-order graph that is never used (t is detached); ``create_graph=False`` measures its cost.
* ``impl="hooks"``: one backward pass. A tensor hook on each weighted tap sees the incoming
  gradient a_ℓ and returns a_ℓ + δ_ℓ, with the derivative of the auxiliary term

  .. math::
      \delta_\ell = \frac{\partial}{\partial y_\ell}\,\lambda_\ell \frac{1}{N_\ell}
          \sum_e (y_{\ell,e} - t_{\ell,e})^2 = k_\ell\,(y_\ell - t_\ell),\qquad k_\ell = 2\lambda_\ell / N_\ell.

  With several weighted levels, a_ℓ is not ∇_{y_ℓ}L: it also carries the δ_j injected at
  downstream taps j after they flowed back, a_ℓ = g_ℓ + Σ_{j>ℓ} J_{j←ℓ}ᵀ δ_j. Taps fire in
  backward order, so when hook j injects δ_j it also computes, with a local vector-Jacobian
  product issued from inside the hook (reentrant autograd), r_{j→ℓ} = J_{j←ℓ}ᵀ δ_j for every
  weighted tap ℓ before it (``autograd.grad(y_j, [y_ℓ...], δ_j, retain_graph=True)``); hook ℓ
  then recovers g_ℓ = a_ℓ − Σ_j r_{j→ℓ} exactly before clipping (hooks met inside that local
  VJP pass their gradient through). Each weighted tap returns an alias of y (``y.view_as(y)``),
  so a tap can only depend on taps made before it: any model that calls ``self.tap(name, y)``
  works, and ∇_{y_ℓ}L is the gradient through the tapped value.

  Cost: the main backward is unchanged; per weighted tap with weighted taps upstream, one
  input-gradient-only VJP (no weight gradients) through the blocks between the earliest such
  upstream tap and it — never through the LSTM or the head, which lie outside that subgraph.
  For the seed layout with fast+medium that is one pass through LN_m + FFN_m
  (≈ 2·B·T·d·d_ff MACs); with fast+medium+slow, FFN_m is traversed twice (once for δ_medium,
  once on the way from slow to fast). Plus O(N_ℓ) element-wise work per weighted tap.
  Under bf16 autocast the hook arithmetic runs in float32 (float64 stays float64) and the
  gradient is returned in the incoming dtype; g_ℓ is then recovered to bf16 accuracy
  relative to |a_ℓ| = |g_ℓ + downstream δ|, fine while the δ are not much larger than g.

Scale note: L is a mean over B·T characters, so the elements of ∇_{y_ℓ}L are O(1/(B·T)) and
the prototype's c = 10 never clips at the seed sizes (``clip_frac`` shows it).

Data-parallel training (nlcore.accel.ddp, N ranks, each with B/N of the rows): the objective
is the one-process objective on the global batch. Rank r backpropagates its own token-mean loss
L_r, and nlcore.accel.ddp AVERAGES gradients across ranks, so every gradient a rank computes
must be N times the global one restricted to its rows. Two consequences: (1) the target is
t = clip(∇_y L_global) with ∇_y L_global = ∇_y L_r / N on the rank's rows, so ``grad_scale``
(1/N; 1 in one process) scales the recovered g before clipping, in both impls;
(2) the global δ = 2λ/numel(y_global)·(y − t), times N, is 2λ/numel(y_r)·(y − t): the
k = 2λ/N_ℓ above with the rank's own numel is already right, as is the reference's MSE over the
rank's elements. Metrics are the rank's own (rank 0 logs them), with signal_norm and clip_frac
taken on the global-scale ∇_y L_global over the rank's elements.

With CMS the auxiliary gradient simply accumulates in ``.grad`` with the rest, reaching every
parameter upstream of y_ℓ. Metrics (``drain_metrics``), per level, averaged over the steps
since the last drain: ``aux_loss`` = λ·MSE, ``signal_norm`` = the whole-tensor Frobenius norm
‖∇_{y_ℓ}L‖ before clipping (over all B·T·d elements, not per token), ``clip_frac`` = the
fraction of elements with |∇_{y_ℓ}L| > c, and ``steps``. They accumulate on the device and
reach the host in one transfer at drain time; with ``record_every = n`` only steps divisible by
n are recorded (the trainer passes its log interval: a sample per log line, no per-step cost).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nlcore.config import SurpriseConfig
from nlcore.models.base import SequenceModel

METRICS = ("aux_loss", "signal_norm", "clip_frac")


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # bf16/fp16 -> fp32; fp32/fp64 unchanged


def inject(grad: Tensor, corr: Tensor | None, y: Tensor, clip: float, k: float, scale: float,
           want_delta: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """The hook's arithmetic on the incoming gradient a (all (B, T, d)): returns
    g = scale (a − corr) (∇_y L alone), y − clip(g, ±c) in the working dtype, δ = k (y − t) (if
    asked for, in y's dtype) and a + δ in a's dtype. Pure tensor maths: the trainer may compile it into one
    kernel (nlcore.accel.compile). Type promotion does the float32 casts."""
    g = grad if corr is None else torch.sub(grad, corr)
    if scale != 1.0:  # data parallel: ∇_y L_global = ∇_y L_rank / N (module docstring)
        g = g * scale
    diff = torch.sub(y, g.clamp(-clip, clip))  # y − t, t = clip(∇_y L, ±c)
    if diff.dtype != _work_dtype(diff.dtype):
        diff = diff.to(_work_dtype(diff.dtype))
    delta = (k * diff).to(y.dtype) if want_delta else None  # in y's dtype: the local VJP's grad_outputs
    return g, diff, delta, torch.add(grad, diff, alpha=k).to(grad.dtype)


class Surprise:
    r"""The surprise objective of `SurpriseConfig` on a `SequenceModel` (see the module docstring).

    Per training step (1-based ``step``): ``begin(step)``; forward; ``total = total_loss(loss)``;
    ``total.backward()``; ``end()``. The objective is active when ``step % cfg.every == 0``.
    ``create_graph`` only affects ``impl="reference"`` (True: the prototype's second-order graph).
    """

    def __init__(self, cfg: SurpriseConfig, model: SequenceModel, *, create_graph: bool = True,
                 record_every: int = 1, compile_fn=None, grad_scale: float = 1.0) -> None:
        cfg.validate()
        self._inject = inject if compile_fn is None else compile_fn(inject)  # the hook's arithmetic
        if record_every < 1:
            raise ValueError(f"record_every must be >= 1, got {record_every}")
        self.cfg, self.model, self.create_graph = cfg, model, create_graph
        self.record_every = record_every  # metrics are sampled on steps divisible by it
        self._recording = True
        self.weights = {n: float(w) for n, w in cfg.weights.items() if w > 0}  # levels with λ > 0
        self.active = False
        self.grad_scale = grad_scale  # N data-parallel ranks: 1/N, ∇_y L_global = ∇_y L_rank / N
        self._acc: dict[str, Tensor] = {}  # level -> (3,) float64 running sums of METRICS (device)
        self._count: dict[str, int] = {}  # level -> steps accumulated (host)
        self._clear()

    def _clear(self) -> None:
        self._ys: dict[str, Tensor] = {}  # weighted level -> its tapped alias, in tap order
        self._seen: list[str] = []  # every level name tapped this forward
        self._corr: dict[str, Tensor] = {}  # level -> Σ_j J_{j←ℓ}ᵀ δ_j from downstream hooks
        self._handles: list = []
        self._inner = False  # True while our own local VJP runs (its hooks must pass through)

    # ------------------------------------------------------------------ the trainer's API
    def begin(self, step: int) -> None:
        """Install the tap function when the objective is active at 1-based `step`."""
        self._clear()
        self.active = bool(self.weights) and step % self.cfg.every == 0
        self._recording = step % self.record_every == 0
        self.model.tap_fn = self._tap if self.active else None
        self.model.tap_names = frozenset(self.weights) if self.active else None  # unweighted taps: identity

    def total_loss(self, loss: Tensor) -> Tensor:
        """What the trainer backpropagates: `loss` (+ the auxiliary terms for "reference")."""
        if not self.active:
            return loss
        self._check_taps()
        if self.cfg.impl == "hooks":
            return loss  # the hooks add the auxiliary gradient during loss.backward()
        names = list(self._ys)
        ys = [self._ys[n] for n in names]
        gs = torch.autograd.grad(loss, ys, create_graph=self.create_graph, retain_graph=True)  # ∇_y L
        total = loss
        for n, y, g in zip(names, ys, gs):
            dt = _work_dtype(y.dtype)
            if self.grad_scale != 1.0:  # data parallel: ∇_y L_global = ∇_y L_rank / N
                g = g * self.grad_scale
            target = g.to(dt).clamp(-self.cfg.clip, self.cfg.clip).detach()  # sg(clip(∇_y L))
            aux = self.weights[n] * torch.mean((y.to(dt) - target) ** 2)  # λ·MSE(y, t)
            total = total + aux
            if self._recording:
                self._record(n, aux.detach(), g.detach().to(dt))
        return total

    def end(self) -> None:
        """Remove the tap function and the hooks; drop every reference to this step's graph."""
        for h in self._handles:
            h.remove()
        self.model.tap_fn = None
        self.model.tap_names = None
        self.active = False
        self._clear()

    def drain_metrics(self) -> dict[str, dict[str, float]]:
        """Per level: the mean of METRICS over the steps since the last drain, and `steps`.
        One device-to-host transfer; {} when the objective was not active since the last drain."""
        names = [n for n in self._acc if self._count.get(n, 0) > 0]
        if not names:
            return {}
        sums = torch.stack([self._acc[n] for n in names]).cpu().tolist()  # the one transfer
        out = {}
        for n, row in zip(names, sums):
            k = self._count[n]
            out[n] = {m: v / k for m, v in zip(METRICS, row)} | {"steps": k}
        self._acc, self._count = {}, {}
        return out

    def plan(self, step: int) -> tuple[bool, bool]:
        """(active, recording) at 1-based `step`, without installing anything."""
        return bool(self.weights) and step % self.cfg.every == 0, step % self.record_every == 0

    def take_metrics(self) -> tuple[dict[str, Tensor], dict[str, int]]:
        """The metric accumulators on the device (sums, step counts), leaving empty ones: the
        CUDA-graph step records a captured step's metrics into fresh accumulators this way."""
        taken = (self._acc, self._count)
        self._acc, self._count = {}, {}
        return taken

    def put_metrics(self, taken: tuple[dict[str, Tensor], dict[str, int]]) -> None:
        """Replace the accumulators by ones from `take_metrics`."""
        self._acc, self._count = taken

    def add_metrics(self, sums: dict[str, Tensor], counts: dict[str, int]) -> None:
        """Add the sums and counts of a replayed step to the accumulators, as recording would."""
        for n, v in sums.items():
            if n in self._acc:
                self._acc[n].add_(v)
            else:
                self._acc[n] = v.clone()
            self._count[n] = self._count.get(n, 0) + counts.get(n, 1)

    # ------------------------------------------------------------------ internals
    def _tap(self, name: str, y: Tensor) -> Tensor:
        self._seen.append(name)
        if name not in self.weights or not y.requires_grad:
            return y
        if name in self._ys:
            raise ValueError(f"surprise.weights.{name}: level {name!r} was tapped twice in one forward pass")
        y = y.view_as(y)  # (B, T, d) alias: the tapped value; later computation depends on it
        self._ys[name] = y
        if self.cfg.impl == "hooks":
            self._handles.append(y.register_hook(lambda grad, n=name: self._hook(n, grad)))
        return y

    def _check_taps(self) -> None:
        missing = [n for n in self.weights if n not in self._ys]
        if missing:
            n = missing[0]
            why = "tapped without gradient" if n in self._seen else "never tapped by the model"
            seen = self._seen
            self.end()  # leave the model clean
            raise ValueError(f"surprise.weights.{n}: level {n!r} is {why} "
                             f"(tapped levels: {sorted(set(seen))}); "
                             f"{type(self.model).__name__} cannot take a surprise weight there")

    def _hook(self, name: str, grad: Tensor) -> Tensor | None:
        if self._inner:  # a hook met inside our own local VJP: leave that gradient alone
            return None
        y = self._ys[name]
        # incoming a = ∇_y L + downstream auxiliary terms, (B, T, d): `inject` does the arithmetic
        lam = self.weights[name]
        k = 2.0 * lam / y.numel()  # δ = k (y − t), k = 2λ/N
        ups = self._upstream(name)
        g, diff, delta, out = self._inject(grad, self._corr.pop(name, None), y.detach(), self.cfg.clip, k,
                                           self.grad_scale, bool(ups))
        if ups:
            self._inner = True
            try:  # local VJP through the blocks between the upstream taps and y only
                rs = torch.autograd.grad(y, [self._ys[n] for n in ups], grad_outputs=delta,
                                         retain_graph=True, allow_unused=True)
            finally:
                self._inner = False
            for n, r in zip(ups, rs):
                if r is not None:  # J_{name←n}ᵀ δ, to subtract at n's hook
                    r = r.to(_work_dtype(r.dtype))
                    self._corr[n] = r if n not in self._corr else self._corr[n] + r
        if self._recording:
            self._record(name, lam * diff.square().mean(), g.to(diff.dtype))
        return out  # a + δ

    def _upstream(self, name: str) -> list[str]:
        """Weighted taps made before `name`: the only ones its δ can reach (tap order is topological)."""
        order = list(self._ys)
        return order[:order.index(name)]

    def _record(self, name: str, aux: Tensor, g: Tensor) -> None:
        stats = torch.stack([aux.to(g.dtype), torch.linalg.vector_norm(g),
                             (g.abs() > self.cfg.clip).to(g.dtype).mean()]).to(torch.float64)
        if name in self._acc:
            self._acc[name].add_(stats)
        else:
            self._acc[name] = stats
        self._count[name] = self._count.get(name, 0) + 1
