"""Optimizers built on the delta rule: `DeltaRule` (DGD for nn.Linear layers, with optional
delta momentum) and `DeepMomentum` (DMGD, exploratory).

Nested Learning (Behrouz et al., NeurIPS 2025) §2.3: Eqs. 27–29 (DGD, the L2-regression form of
backprop's associative memory), Eq. 31 (CMS: parameters frozen within a chunk, the per-token
updates of the chunk summed at its boundary), Eqs. 17, 21–22 (momentum and delta momentum),
Eq. 23 (deep momentum). The maths lives in `nlcore.delta`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.optim import SGD, Adam, Optimizer

from nlcore.delta import (
    apply_delta_statistics,
    batch_mean_delta_step,
    delta_momentum_step,
    delta_statistics,
    momentum_step,
    sequential_delta_steps,
)

MODES = ("summed", "sequential", "batch_mean")
AGGREGATIONS = ("mean", "sum")
FALLBACKS = ("sgd", "adam")
MOMENTUM_KINDS = ("delta", "classic")


def _require(ok: bool, field: str, requirement: str, value) -> None:
    if not ok:
        raise ValueError(f"{field} must be {requirement}, got {value!r}")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


class DeltaRule(Optimizer):
    r"""Delta-rule (DGD) optimizer for the `nn.Linear` weights found in `modules`.

    Per token n, with x̂ = x/‖x‖ the layer input and g = ∇_yL the gradient at its output
    (the local surprise signal; regression target u = −g):

        W ← W (I − η′ x̂ x̂ᵀ) − η′ g x̂ᵀ                                   (Eq. 29, normalised)

    mode "summed" (default): every token recorded since the last `step()` is evaluated at the
    same frozen W and the updates are summed (a CMS chunk, Eq. 31):

        W ← W − η′_agg (W A + B),   A = Σ_n x̂_n x̂_nᵀ,  B = Σ_n g_n x̂_nᵀ

    with only A (d_in, d_in) and B (d_out, d_in) kept, in float32 (float64 for float64 weights).
    `aggregation="mean"`: η′_agg = lr/N (N tokens recorded), i.e. `lr` is η′ of one gradient
    step on the token-MEAN objective mean_n ½‖W x̂_n + g_n‖²; since λ_max(A/N) ≤ 1 any
    lr ∈ (0, 1] keeps the decay contractive, and lr = 1 with a single token is an exact overwrite
    (η = ∞). `aggregation="sum"`: η′_agg = lr is the per-token η′ of Eq. 29 summed as in Eq. 31
    (needs lr·λ_max(A) ≤ 1, i.e. lr ≲ 1/N for aligned keys). Proximal η ↔ η′ = η/(1+η).
    Note g is ∇_yL of the loss as written: with a token-mean loss it carries a 1/N factor.

    mode "sequential": the same rule applied token by token in forward order (W changes between
    tokens, g stays as recorded at the frozen W); a slow reference that keeps every (x, g)
    record, refused beyond `max_record_bytes`.
    mode "batch_mean": the prototype's rule W(I − β x̄x̄ᵀ) − lr·∇_WL with x̄ the normalised mean
    input of the chunk and ∇_WL = `.grad` (aggregation does not apply): one rank-one decay per
    chunk instead of one per token, kept to compare against.

    `decay_lr` (β / η′_d) sets the coefficient of the W A term separately; None ties it to lr.
    `grad_scale="per_token"` records N·∇_yL for a call over N tokens: with a token-MEAN loss that
    is ∇_{y_n} ℓ_n, the gradient of token n's own loss, so the regression target −∇_{y_n}ℓ_n has
    the per-token scale of Eq. 29 instead of being shrunk by 1/N (which makes W A pure decay).

    Momentum (`momentum` = α > 0) acts on the chunk's increment Δ = W_new − W:
      classic (Eq. 17):  m ← α m + Δ;                        W ← W + m
      delta   (Eq. 22):  m ← α (I − Δ̂Δ̂ᵀ) m + Δ,  Δ̂ = Δ/‖Δ‖_F;  W ← W + m   (per matrix)

    Data-parallel training (nlcore.accel.ddp, `world_size` = N ranks with equal shards, each
    backpropagating its own token-mean loss L_r): the recorded g must be the one-process one,
    ∇_yL_global = ∇_yL_r / N, and "per_token" multiplies it by the GLOBAL token count of the call
    (N × the rank's); so g is scaled by (N·n_r if per_token else 1) / N. nlcore.accel.ddp sums A,
    B (sum_x) and the token counts across ranks at the level's update (`sync_slots`), before `step`.

    Every other parameter in `params` (biases, embeddings, norms, Linear weights not reachable
    from `modules`) is stepped by the fallback optimizer (SGD or Adam, lr = `fallback_lr`, or
    `lr` when None) on its ordinary `.grad`, as accumulated by the trainer at `step()` time.
    Statistics are recorded by hooks whenever a Linear's output takes part in a backward pass;
    call `remove_hooks()` when done. `state_dict()` includes the pending statistics.
    """

    def __init__(self, params, *, modules: dict[str, nn.Module], lr: float,
                 mode: str = "summed", aggregation: str = "mean", fallback: str = "adam",
                 fallback_lr: float | None = None, fallback_kwargs: dict | None = None,
                 momentum: float = 0.0, momentum_kind: str = "delta",
                 decay_lr: float | None = None, eps: float = 1e-12,
                 max_record_bytes: int = 2**30, grad_scale: str = "as_recorded", world_size: int = 1):
        _require(_positive(lr), "lr", "a finite number > 0", lr)
        _require(mode in MODES, "mode", f"one of {MODES}", mode)
        _require(aggregation in AGGREGATIONS, "aggregation", f"one of {AGGREGATIONS}", aggregation)
        _require(fallback in FALLBACKS, "fallback", f"one of {FALLBACKS}", fallback)
        _require(fallback_lr is None or _positive(fallback_lr), "fallback_lr",
                 "None or a finite number > 0", fallback_lr)
        _require(isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0, "momentum",
                 "in [0, 1)", momentum)
        _require(momentum_kind in MOMENTUM_KINDS, "momentum_kind", f"one of {MOMENTUM_KINDS}",
                 momentum_kind)
        _require(decay_lr is None or (isinstance(decay_lr, (int, float)) and decay_lr >= 0),
                 "decay_lr", "None or >= 0", decay_lr)
        _require(_positive(eps), "eps", "> 0", eps)
        _require(grad_scale in ("as_recorded", "per_token"), "grad_scale",
                 "'as_recorded' or 'per_token'", grad_scale)
        self.grad_scale = grad_scale
        _require(isinstance(max_record_bytes, int) and max_record_bytes > 0, "max_record_bytes",
                 "a positive int", max_record_bytes)
        _require(isinstance(modules, dict) and len(modules) > 0
                 and all(isinstance(m, nn.Module) for m in modules.values()), "modules",
                 "a non-empty dict of name -> nn.Module", type(modules).__name__)
        super().__init__(params, dict(lr=lr, decay_lr=decay_lr, momentum=momentum))
        self.mode, self.aggregation, self.momentum_kind = mode, aggregation, momentum_kind
        self.eps, self.max_record_bytes = eps, max_record_bytes

        owned = {id(p): p for g in self.param_groups for p in g["params"]}
        self._slots: dict[int, dict] = {}  # id(weight) -> pending statistics and momentum
        self._hooks: list = []
        self.delta_param_names: list[str] = []  # "<modules key>.<submodule>" per delta Linear
        self._names: list[int] = []  # id(weight) per entry of delta_param_names
        seen: set[int] = set()
        for root_name, root in modules.items():
            for sub_name, mod in root.named_modules():
                if (not isinstance(mod, nn.Linear) or id(mod) in seen
                        or id(mod.weight) not in owned):
                    continue
                seen.add(id(mod))
                self.delta_param_names.append(f"{root_name}.{sub_name}".rstrip("."))
                self._names.append(id(mod.weight))
                self._slots.setdefault(id(mod.weight), self._empty_slot())
                self._hooks.append(mod.register_forward_hook(self._forward_hook, with_kwargs=True))
        self.fallback_params = [p for p in owned.values() if id(p) not in self._slots]
        self._fallback = None
        if self.fallback_params:
            opt_cls = SGD if fallback == "sgd" else Adam
            self._fallback = opt_cls(self.fallback_params, lr=fallback_lr or lr,
                                     **(fallback_kwargs or {}))
        self._seq = 0  # forward-call counter: orders the records of mode "sequential"
        self._record_bytes = 0
        if world_size > 1 and mode == "sequential":
            raise ValueError("the delta rule's mode 'sequential' keeps per-token records and cannot be summed "
                             "across data-parallel ranks; use 'summed'")
        self.world_size = world_size  # data-parallel ranks averaging their token-mean losses

    # ------------------------------------------------------------------ recording
    @staticmethod
    def _empty_slot() -> dict:
        return {"n": 0, "A": None, "B": None, "sum_x": None, "records": [], "momentum": None}

    def _forward_hook(self, module: nn.Linear, args, kwargs, output) -> None:
        if not (isinstance(output, Tensor) and output.requires_grad
                and module.weight.requires_grad):
            return
        x = (args[0] if args else kwargs["input"]).detach()  # layer input: (..., d_in)
        seq, self._seq = self._seq, self._seq + 1
        weight = module.weight
        # For (B, T, d) inputs F.linear returns a view of a 2-D result; an in-place op on the
        # view (ReLU(inplace=True), +=) would drop a hook on the view, one on its base survives
        # and fires with ∇ of the pre-in-place value, i.e. ∇_yL.
        base = output._base
        tap = base if base is not None and base.numel() == output.numel() else output
        tap.register_hook(lambda g: self._accumulate(weight, x, g.detach(), seq))

    def _accumulate(self, weight: Tensor, x: Tensor, g: Tensor, seq: int) -> None:
        slot = self._slots[id(weight)]
        dt = torch.promote_types(weight.dtype, torch.float32)  # fp32 even under bf16 autocast
        X = x.reshape(-1, x.shape[-1]).to(dt)  # (N, d_in)
        G = g.reshape(-1, g.shape[-1]).to(dt)  # ∇_yL: (N, d_out)
        if self.world_size != 1:  # data parallel (class docstring): the global loss's gradient,
            n_global = X.shape[0] * self.world_size  # per_token: times the call's global tokens
            G = G * ((n_global if self.grad_scale == "per_token" else 1) / self.world_size)
        elif self.grad_scale == "per_token":  # the loss is a mean over this call's N tokens:
            G = G * X.shape[0]  # N ∇_{y_n} L = ∇_{y_n} ℓ_n, the per-token surprise signal
        if self.mode == "summed":
            A, B = delta_statistics(X, G, self.eps)  # Σ x̂x̂ᵀ (d_in, d_in), Σ g x̂ᵀ (d_out, d_in)
            slot["A"] = A if slot["A"] is None else slot["A"].add_(A)
            slot["B"] = B if slot["B"] is None else slot["B"].add_(B)
        elif self.mode == "sequential":
            nbytes = (X.numel() + G.numel()) * X.element_size()
            if self._record_bytes + nbytes > self.max_record_bytes:
                raise RuntimeError(
                    f"DeltaRule(mode='sequential') keeps every (x, grad_y) record: "
                    f"{self._record_bytes + nbytes} bytes would exceed max_record_bytes="
                    f"{self.max_record_bytes}; use mode='summed' or raise max_record_bytes")
            self._record_bytes += nbytes
            slot["records"].append((seq, X.clone(), G.clone()))
        else:  # batch_mean: only the input mean is needed, the gradient is .grad
            s = X.sum(0)  # Σ x: (d_in,)
            slot["sum_x"] = s if slot["sum_x"] is None else slot["sum_x"].add_(s)
        slot["n"] += X.shape[0]

    def remove_hooks(self) -> None:
        """Detach every forward hook this optimizer registered (idempotent)."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def sync_slots(self) -> list[tuple[dict, Tensor]]:
        """(pending-statistics slot, weight) per delta weight in registration order, the same on
        every rank: nlcore.accel.ddp sums their 'A', 'B', 'sum_x' and 'n' across ranks."""
        params = {id(p): p for p in self._ordered_params()}
        return [(self._slots[w], params[w]) for w in self._names]

    @property
    def pending_tokens(self) -> dict[str, int]:
        """Tokens recorded since the last step, per delta weight (in registration order)."""
        return {name: self._slots[w]["n"] for name, w in zip(self.delta_param_names, self._names)}

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                slot = self._slots.get(id(p))
                if slot is not None:
                    self._step_weight(p, slot, group)
        if self._fallback is not None:
            self._fallback.step()
        return loss

    def _step_weight(self, p: Tensor, slot: dict, group: dict) -> None:
        n = slot["n"]
        if n == 0 or (self.mode == "batch_mean" and p.grad is None):
            self._clear(slot)
            return
        lr = group["lr"]
        decay = lr if group["decay_lr"] is None else group["decay_lr"]
        if self.mode != "batch_mean" and self.aggregation == "mean":
            lr, decay = lr / n, decay / n  # η′ on the token-mean objective
        dt = torch.promote_types(p.dtype, torch.float32)
        W = p.detach().to(dt)  # (d_out, d_in)
        if self.mode == "summed":
            W_new = apply_delta_statistics(W, slot["A"], slot["B"], step=lr, decay=decay)
        elif self.mode == "sequential":
            recs = sorted(slot["records"], key=lambda r: r[0])  # forward order
            X = torch.cat([r[1] for r in recs])  # (N, d_in)
            G = torch.cat([r[2] for r in recs])  # (N, d_out)
            W_new = sequential_delta_steps(W, X, G, step=lr, decay=decay)
        else:
            xbar = (slot["sum_x"] / n).unsqueeze(0)  # x̄: (1, d_in)
            W_new = batch_mean_delta_step(W, xbar, p.grad.to(dt), lr=lr, beta=decay)
        alpha = group["momentum"]
        if alpha > 0:
            delta = W_new - W  # Δ: this chunk's increment (d_out, d_in)
            m = slot["momentum"] if slot["momentum"] is not None else torch.zeros_like(W)
            rule = delta_momentum_step if self.momentum_kind == "delta" else momentum_step
            slot["momentum"] = rule(m, -delta, alpha=alpha, eta=1.0)
            W_new = W + slot["momentum"]
        p.copy_(W_new.to(p.dtype))
        self._clear(slot)

    def clear_statistics(self) -> None:
        """Drop every pending statistic (a discarded partial CMS chunk)."""
        for slot in self._slots.values():
            self._clear(slot)

    def _clear(self, slot: dict) -> None:
        self._record_bytes -= sum((r[1].numel() + r[2].numel()) * r[1].element_size()
                                  for r in slot["records"])
        slot.update(n=0, A=None, B=None, sum_x=None, records=[])

    # ------------------------------------------------------------------ checkpointing
    def _ordered_params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict:
        sd = super().state_dict()

        def clone(t):
            return None if t is None else t.detach().clone()

        slots = {}
        for i, p in enumerate(self._ordered_params()):
            s = self._slots.get(id(p))
            if s is not None:
                slots[i] = {"n": s["n"], "A": clone(s["A"]), "B": clone(s["B"]),
                            "sum_x": clone(s["sum_x"]), "momentum": clone(s["momentum"]),
                            "records": [(q, clone(x), clone(g)) for q, x, g in s["records"]]}
        sd["delta"] = {"mode": self.mode, "seq": self._seq, "slots": slots}
        sd["fallback"] = None if self._fallback is None else self._fallback.state_dict()
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        delta, fb = state_dict.pop("delta"), state_dict.pop("fallback", None)
        if delta["mode"] != self.mode:
            raise ValueError(f"mode must match the checkpoint's {delta['mode']!r}, "
                             f"got {self.mode!r}")
        super().load_state_dict(state_dict)
        self._seq = delta["seq"]
        self._record_bytes = 0
        params = self._ordered_params()
        for slot in self._slots.values():
            slot.update(self._empty_slot())
        for i, s in delta["slots"].items():
            p = params[int(i)]

            def to(t, dev=p.device):
                return None if t is None else t.detach().clone().to(dev)

            recs = [(q, to(x), to(g)) for q, x, g in s["records"]]
            self._slots[id(p)].update(n=s["n"], A=to(s["A"]), B=to(s["B"]), records=recs,
                                      sum_x=to(s["sum_x"]), momentum=to(s["momentum"]))
            self._record_bytes += sum((x.numel() + g.numel()) * x.element_size()
                                      for _, x, g in recs)
        if fb is not None and self._fallback is not None:
            self._fallback.load_state_dict(fb)


class DeepMomentum(Optimizer):
    r"""EXPLORATORY Deep Momentum GD (DMGD, Eq. 23): the momentum is a small MLP on the gradient.

    Per parameter tensor, a per-coordinate residual MLP m_φ: R → R (shared by all coordinates,
    φ = (w₁, b₁, w₂) ∈ R^{3×h}) maps the gradient u_i to the update:

        W_{i+1} = W_i − lr · r_i m_φ(û_i),   m_φ(û) = û + w₂ᵀ tanh(w₁ û + b₁),   û = u/r, r = rms(u)
        φ_{i+1} = α φ_i + meta_lr · ∇_φ mean(û_i ⊙ m_φ(û_{i−1}))

    The paper leaves m's internal objective open ("e.g. dot product"). This optimizer uses
    the dot product with the NEXT gradient as value: −lr⟨u_i, m_φ(u_{i−1})⟩ is the first-order
    change of the loss caused by the previous update, so φ descends the outer loss itself
    (a hypergradient; for a linear m it reduces to hypergradient learning-rate adaptation).
    w₂ = 0 at start, so the first steps are exactly SGD; α < 1 forgets φ toward that identity map.
    Inputs are rms-normalised so `meta_lr` is scale-free. Not a tuned method: label results
    from it as exploratory.
    """

    EXPLORATORY = True

    def __init__(self, params, *, lr: float, meta_lr: float = 1e-2, hidden: int = 8,
                 alpha: float = 1.0, eps: float = 1e-12):
        _require(_positive(lr), "lr", "a finite number > 0", lr)
        _require(isinstance(meta_lr, (int, float)) and meta_lr >= 0, "meta_lr", ">= 0", meta_lr)
        _require(isinstance(hidden, int) and hidden > 0, "hidden", "a positive int", hidden)
        _require(isinstance(alpha, (int, float)) and 0 < alpha <= 1, "alpha", "in (0, 1]", alpha)
        _require(_positive(eps), "eps", "> 0", eps)
        super().__init__(params, dict(lr=lr, meta_lr=meta_lr, alpha=alpha))
        self.hidden, self.eps = hidden, eps

    @staticmethod
    def memory(phi: Tensor, uh: Tensor) -> Tensor:
        """m_φ(û) = û + w₂ᵀ tanh(w₁ û + b₁), applied per coordinate; uh (n,) -> (n,)."""
        w1, b1, w2 = phi  # (h,) each
        return uh + torch.tanh(uh[:, None] * w1 + b1) @ w2  # (n,)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:  # deterministic init: w₁ spread over [-2, 2], b₁ over [-1, 1], w₂ = 0
                    h = self.hidden
                    st["phi"] = torch.stack([torch.linspace(-2, 2, h), torch.linspace(-1, 1, h),
                                             torch.zeros(h)]).to(p.device)  # φ: (3, h)
                    st["prev"] = None
                u = p.grad.detach().reshape(-1).float()  # u_i: (n,)
                r = u.pow(2).mean().sqrt().clamp_min(self.eps)  # rms(u_i)
                uh = u / r  # û_i
                phi = st["phi"]
                if st["prev"] is not None and group["meta_lr"] > 0:
                    with torch.enable_grad():
                        leaf = phi.detach().requires_grad_(True)
                        obj = (uh * self.memory(leaf, st["prev"])).mean()  # ⟨û_i, m_φ(û_{i−1})⟩
                        (dphi,) = torch.autograd.grad(obj, leaf)
                    phi = group["alpha"] * phi + group["meta_lr"] * dphi
                elif group["alpha"] != 1.0:
                    phi = group["alpha"] * phi
                st["phi"] = phi
                upd = r * self.memory(phi, uh)  # m(u_i): (n,)
                p.add_(upd.view_as(p).to(p.dtype), alpha=-group["lr"])
                st["prev"] = uh
        return loss
