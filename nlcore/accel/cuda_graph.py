"""The graphed training step (``TrainConfig.cuda_graph="on"``): forward + loss + backward
replayed from a CUDA graph; and the graphed evaluation window (`GraphedEval`, at the end).

At the seed sizes the eager step is launch-bound: a few hundred small kernels, each costing
more Python and dispatcher time than GPU time, so the GPU idles between them. `GraphedStep` captures
`Trainer.forward_backward` (autocast forward, fp32 cross-entropy, surprise objective, backward)
once per variant and replays it, leaving only a handful of eager launches per step.

Design
* Static buffers: inputs ``x``, ``y`` (B, T) long; the carried recurrent state ``state_in`` (the
  model's state dict); one ``.grad`` tensor per trainable parameter. Every step copies the window
  into ``x``/``y`` and, unless it already is there, the carried state into ``state_in``; the
  graph ends by copying the new state into ``state_in`` (after the backward, which still needs
  the old one), and ``state_in`` is handed to the carrier. The carrier's state therefore aliases
  ``state_in`` until the next step: read it between steps, never hold it across one. No
  autograd crosses windows (the state buffers are plain data), as in the eager step.
* Gradients accumulate in place into static buffers (``p.grad += g``; per CMS level, views of
  one flat buffer), which is exactly how a CMS level sums its chunk's gradients. Inside the
  captured body every ``.grad`` is set to None for the backward, which then hands over its fresh
  gradients without a kernel, and one ``_foreach_add_`` (compiled with the trainer's backend: one
  fused kernel) adds them all into the static buffers afterwards: no add per parameter, and none
  on the path between the tail's backward and the recurrence's (the same additions, so on CPU
  still bit-identical to the eager step). So the trainer builds
  its `CMS` with ``zero_grad="inplace"`` (zeroed after an update, never set to None). Buffers
  replaced from outside (a resumed checkpoint, ``p.grad = None``) are copied back into the static
  ones before the next replay. The CMS updates (clip, optimizer step, telemetry) stay eager and
  outside the graph: few kernels, and levels update on different steps.
* Variants, captured lazily the first time they are needed: ``plain``; with a surprise
  objective also ``surprise`` (its tensor hooks, including the reentrant ``autograd.grad``, are
  captured with it) and ``surprise_record`` (a step on which surprise samples its metrics: the
  graph writes them to static outputs that are added to `Surprise`'s accumulators after the
  replay, the same arithmetic as its own ``_record``).
* Capture: the standard recipe. Warm-up runs (cuDNN, cuBLAS and autograd-engine state) on the
  side stream that then captures; the values of the ``.grad`` and state buffers are snapshotted
  before and restored after, so warm-up and capture leave no trace (the body puts every static
  ``.grad`` back itself, even when it raises). A capture that fails is reported once (a warning and
  ``telemetry()["capture_errors"]``) and that variant then runs eagerly.
* Eager fallback, counted per reason in ``telemetry()``: ``doc_reset`` (document starts inside
  the window: the model splits its recurrence there, another kernel sequence), ``shape`` /
  ``state`` (a window or state of another shape, e.g. a final shorter window), ``capture_failed``
  A state reset is just data (zeros copied in) and is replayed.
* On CPU there is nothing to capture: the same code runs with `_EmulatedGraph`, whose capture
  runs the body once and whose replay runs it again and copies its outputs into the captured
  ones, so CPU tests cover staging, warm-up, restore, merge and fallback; it is bit-identical to
  ``cuda_graph="off"`` (the CPU RNG is forked around warm-up and capture).

Limits: the graph is tied to the parameters' and buffers' addresses (optimizers must update in
place, as torch's do; do not move the model after the first step); the delta optimizers are not
supported (config validation refuses them); with dropout on CUDA the masks come from the graph's
RNG offsets, not the eager sequence; reset="doc" replays only windows without document starts.
"""

from __future__ import annotations

import warnings

import torch

WARMUP = 3  # eager iterations on the capture stream before a capture


def capture(fn, device=None, warmup: int = WARMUP) -> torch.cuda.CUDAGraph:
    """fn captured in a CUDA graph by the standard recipe: `warmup` eager runs on a side stream
    (cuDNN/cuBLAS/autograd state, and any .grad the backward allocates, are set up outside the
    graph), then the capture on that stream. Replay with ``.replay()``. For timing harnesses
    (nlcore.bench.floor, nlcore.bench.memory_paths) and the evaluation window (`GraphedEval`); the
    training step's own capture is `GraphedStep`."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        fn()
    torch.cuda.synchronize(device)
    return graph


class _EmulatedGraph:
    """CPU stand-in for `torch.cuda.CUDAGraph`: capture = one run whose outputs become the static
    outputs; replay = run again and copy the new outputs into them."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.out = fn()

    def replay(self) -> None:
        loss, acc, _ = self.fn()
        with torch.no_grad():
            self.out[0].copy_(loss)
            for k, v in acc.items():
                self.out[1][k].copy_(v)


def _add_into(static: list[torch.Tensor], fresh: list[torch.Tensor]) -> None:
    torch._foreach_add_(static, fresh)


class GraphedStep:
    """`Trainer.forward_backward` from static buffers, replayed from a CUDA graph (see the module
    docstring). ``step(step, batch, state, resets) -> (loss, new_state)`` like the eager call."""

    def __init__(self, trainer, *, warmup: int = WARMUP) -> None:
        t = self.t = trainer
        self.warmup = warmup
        self.cuda = t.device.type == "cuda"
        rows = t.train_stream.batch_size  # this process's rows (all B in one process)
        self.x = torch.zeros(rows, t.cfg.data.seq_len, dtype=torch.long, device=t.device)
        self.y = torch.zeros_like(self.x)
        self.state_in = {k: v.clone() for k, v in t.model.init_state(rows, t.device).items()}
        self.params = [p for p in t.model.parameters() if p.requires_grad]
        self.grads: list[torch.Tensor] | None = None  # static .grad buffers, made at the first replay
        self.graphs: dict[str, tuple] = {}  # variant -> (graph, (loss, acc, counts))
        self.failed: dict[str, str] = {}  # variant -> capture error
        self.stream = torch.cuda.Stream(device=t.device) if self.cuda else None
        self.graph_steps = 0
        self.eager_steps: dict[str, int] = {}
        # static += fresh gradients: compiled with the trainer's backend, one fused kernel with many
        # blocks (multi_tensor_apply gives each block one 64 Ki-element chunk: few blocks here)
        self._accumulate = torch._foreach_add_
        if getattr(t, "compile", None) is not None:
            from nlcore.accel.compile import compiler

            self._accumulate = compiler(t.compile)(_add_into)

    # ------------------------------------------------------------------ the trainer's API
    def step(self, step: int, batch, state: dict, resets) -> tuple[torch.Tensor, dict]:
        why = self._eager_reason(batch, state, resets)
        key = None
        if why is None:
            key = self._variant(step)
            if key in self.failed:
                why = "capture_failed"
        if why is None:
            self._stage(batch, state)
            entry = self.graphs.get(key) or self._capture(step, key)
            if entry is not None:
                graph, (loss, acc, counts) = entry
                graph.replay()
                if acc:
                    self.t.surprise.add_metrics(acc, counts)
                self.graph_steps += 1
                return loss.clone(), dict(self.state_in)
            why = "capture_failed"
        self.eager_steps[why] = self.eager_steps.get(why, 0) + 1
        return self.t.forward_backward(step, batch.x, batch.y, state, resets)

    def telemetry(self) -> dict:
        """Cumulative counts (JSON-ready): graphed and eager steps, eager reasons, captured variants
        and capture errors."""
        return {"graph_steps": self.graph_steps, "eager_steps": sum(self.eager_steps.values()),
                "eager_reasons": dict(self.eager_steps), "graphs": sorted(self.graphs),
                "capture_errors": dict(self.failed)}

    # ------------------------------------------------------------------ internals
    def _eager_reason(self, batch, state: dict, resets) -> str | None:
        if resets is not None:
            return "doc_reset"
        if batch.x.shape != self.x.shape or batch.y.shape != self.y.shape:
            return "shape"
        if state.keys() != self.state_in.keys() or any(v.shape != self.state_in[k].shape for k, v in state.items()):
            return "state"
        return None

    def _variant(self, step: int) -> str:
        sur = self.t.surprise
        if sur is None:
            return "plain"
        active, record = sur.plan(step)
        return ("surprise_record" if record else "surprise") if active else "plain"

    @torch.no_grad()
    def _stage(self, batch, state: dict) -> None:
        self.x.copy_(batch.x)
        self.y.copy_(batch.y)
        for k, v in state.items():
            buf = self.state_in[k]
            if v.data_ptr() != buf.data_ptr():  # else the carrier holds our own output: in place
                buf.copy_(v)
        if self.grads is None:
            self.grads = self._static_grads()
        for p, g in zip(self.params, self.grads):
            if p.grad is not g:  # replaced from outside (resume, set to None): back into the buffer
                g.copy_(p.grad) if p.grad is not None else g.zero_()
                p.grad = g

    def _static_grads(self) -> list[torch.Tensor]:
        """The static .grad buffers: per CMS level, views tiling one flat buffer in the level's
        parameter order (its clip is then one norm and one scaling kernel: nlcore.optim.sliced.flat_base),
        holding any gradient already accumulated."""
        view: dict[int, torch.Tensor] = {}
        for ps in self.t.cms.params.values():
            ps = [p for p in ps if p.requires_grad]
            if not ps:
                continue
            flat = torch.zeros(sum(p.numel() for p in ps), dtype=ps[0].dtype, device=ps[0].device)
            for p, g in zip(ps, flat.split([p.numel() for p in ps])):
                view[id(p)] = g.view_as(p)
        grads = [view.get(id(p), None) for p in self.params]
        grads = [torch.zeros_like(p) if g is None or g.dtype != p.dtype else g for p, g in zip(self.params, grads)]
        for p, g in zip(self.params, grads):
            if p.grad is not None:
                g.copy_(p.grad)
        return grads

    def _body(self, step: int):
        """The captured work. Surprise metrics recorded in it go to scratch accumulators, returned."""
        sur = self.t.surprise
        keep = sur.take_metrics() if sur is not None else None
        for p in self.params:  # the backward hands over fresh gradients (see the module docstring)
            p.grad = None
        try:
            loss, new = self.t.forward_backward(step, self.x, self.y, self.state_in, None)
            with torch.no_grad():
                fresh = [(g, p.grad) for p, g in zip(self.params, self.grads) if p.grad is not None]
                if fresh:
                    self._accumulate([g for g, _ in fresh], [f for _, f in fresh])
                for k, v in new.items():
                    self.state_in[k].copy_(v)
            acc, counts = sur.take_metrics() if keep is not None else ({}, {})
        finally:
            for p, g in zip(self.params, self.grads):
                p.grad = g
            if keep is not None:
                sur.put_metrics(keep)
        return loss.detach(), acc, counts

    def _capture(self, step: int, key: str):
        snap_g = [g.clone() for g in self.grads]
        snap_s = {k: v.clone() for k, v in self.state_in.items()}

        @torch.no_grad()
        def restore() -> None:
            for p, g, s in zip(self.params, self.grads, snap_g):
                p.grad = g
                g.copy_(s)
            for k, v in snap_s.items():
                self.state_in[k].copy_(v)

        try:
            with torch.random.fork_rng(devices=[], enabled=not self.cuda):
                if self.cuda:
                    self.stream.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(self.stream):
                        for _ in range(self.warmup):
                            self._body(step)
                    torch.cuda.current_stream().wait_stream(self.stream)
                    restore()
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, stream=self.stream):
                        out = self._body(step)
                else:
                    for _ in range(self.warmup):
                        self._body(step)
                    restore()
                    graph = _EmulatedGraph(lambda: self._body(step))
                    out = graph.out
        except Exception as e:  # noqa: BLE001 - any capture failure: report once, run eagerly
            if self.t.surprise is not None:
                self.t.surprise.end()
            if self.cuda:
                try:
                    torch.cuda.synchronize(self.t.device)
                except Exception:  # noqa: BLE001 - the capture's own error, already caught
                    pass
            restore()
            self.failed[key] = f"{type(e).__name__}: {e}"
            warnings.warn(f"cuda_graph=on: capture of variant {key!r} failed; it runs eagerly: "
                          f"{self.failed[key]}", RuntimeWarning, stacklevel=3)
            return None
        restore()  # the emulated capture ran the body; on CUDA this is a no-op copy
        self.graphs[key] = (graph, out)
        return self.graphs[key]


class GraphedEval:
    """One evaluation window replayed from a CUDA graph: `forward(x, y, state)` -> (nll (B, T), new
    state), the caller's eager window (`nlcore.training.evaluate.window_nll`), captured once. An
    eager evaluation window pays the launches an eager training step pays (HOPE's segments, the
    memories' chunk loops), window after window. `model` gives the carried state's shapes.

    Static buffers as `GraphedStep`'s: ``x``, ``y`` and ``state_in``; the graph ends by copying the
    new state into ``state_in``, which `window` returns (read it before the next window, as the
    carrier does). ``nll`` (B, T) is a static output: consume it before the next replay. Captured
    at the first window of the buffers' shape, with the model in the mode it is called in (eval);
    warm-up and capture leave ``state_in`` as it was. Windows with document resets or another shape
    or state return None (the caller runs them eagerly), as does every window after a failed capture
    (reported once). On CPU a replay runs the body again (`_EmulatedEval`): bit-identical to eager."""

    def __init__(self, model, rows: int, seq_len: int, device, *, forward, warmup: int = WARMUP) -> None:
        self.forward, self.device, self.warmup = forward, torch.device(device), warmup
        self.cuda = self.device.type == "cuda"
        self.x = torch.zeros(rows, seq_len, dtype=torch.long, device=self.device)
        self.y = torch.zeros_like(self.x)
        self.state_in = {k: v.clone() for k, v in model.init_state(rows, self.device).items()}
        self.graph = None
        self.nll: torch.Tensor | None = None
        self.failed: str | None = None
        self.graph_windows = 0

    def window(self, x: torch.Tensor, y: torch.Tensor, state: dict, resets) -> tuple[torch.Tensor, dict] | None:
        """(nll (B, T), new state) of one window from the graph, or None where it runs eagerly."""
        if self.failed is not None or resets is not None or x.shape != self.x.shape or state.keys() != self.state_in.keys() \
                or any(v.shape != self.state_in[k].shape or v.dtype != self.state_in[k].dtype for k, v in state.items()):
            return None
        with torch.no_grad():
            self.x.copy_(x)
            self.y.copy_(y)
            for k, v in state.items():
                if v.data_ptr() != self.state_in[k].data_ptr():  # else it is our own output: in place
                    self.state_in[k].copy_(v)
        if self.graph is None and not self._capture():
            return None
        self.graph.replay()
        self.graph_windows += 1
        return self.nll, dict(self.state_in)

    @torch.no_grad()
    def _body(self) -> torch.Tensor:
        nll, new = self.forward(self.x, self.y, self.state_in)
        for k, v in new.items():
            self.state_in[k].copy_(v)
        return nll

    def _capture(self) -> bool:
        snap = {k: v.clone() for k, v in self.state_in.items()}

        @torch.no_grad()
        def restore() -> None:
            for k, v in snap.items():
                self.state_in[k].copy_(v)

        def body() -> None:  # the captured call's losses stay in the graph's memory: the static output
            self.nll = self._body()

        try:
            if self.cuda:  # warm-up runs advance state_in (restored below); the capture only records
                graph = capture(body, self.device, self.warmup)
            else:
                graph = _EmulatedEval(self)
        except Exception as e:  # noqa: BLE001 - any capture failure: report once, evaluate eagerly
            if self.cuda:
                try:
                    torch.cuda.synchronize(self.device)
                except Exception:  # noqa: BLE001 - the capture's own error, already caught
                    pass
            self.failed = f"{type(e).__name__}: {e}"
            warnings.warn(f"cuda_graph=on: capture of the evaluation window failed; it runs eagerly: "
                          f"{self.failed}", RuntimeWarning, stacklevel=3)
            restore()
            return False
        restore()
        self.graph = graph
        return True


class _EmulatedEval:
    """CPU stand-in for the evaluation graph: a replay runs the body again (it copies the state into
    the static buffers itself) and its losses become ``nll``."""

    def __init__(self, owner: GraphedEval) -> None:
        self.owner = owner

    def replay(self) -> None:
        self.owner.nll = self.owner._body()
