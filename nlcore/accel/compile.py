"""torch.compile for the parts of a training step that are chains of small kernels.

At the seed sizes a step is latency bound: after the cuDNN recurrence, what remains is dozens of
small pointwise, norm and reduction kernels (LayerNorm, GELU, residual adds, the bf16 -> fp32
cast and log-softmax of the loss, and their backward), each a few µs. Compiling those parts
fuses them into a handful of Triton kernels; the maths is unchanged (same operations, fused).

What is compiled (``TrainConfig.compile``; "auto" = "inductor" on CUDA, off elsewhere):
* the trainer's loss, fp32 cross-entropy of the logits (`fp32_cross_entropy`);
* the parts a model marks with ``SequenceModel.part(name, fn)`` (`SequenceModel.compile_parts`):
  for the nested LSTM, the whole post-recurrence tail when no tap is hooked, else the three
  pieces between its taps, so a surprise objective's tensor hooks stay outside compiled code.

The recurrence itself (cuDNN) is never compiled. Compiled parts are specialised to their shapes
(``dynamic=False``): training, evaluation and a last shorter window compile once each; models of
the same shapes share the compiled code (parameters are inputs of the compiled graph). Under the
CUDA-graph step (`nlcore.accel.cuda_graph`) the compilation happens during the graph's eager warm-up, and
the capture records the generated kernels. On CPU, ``compile="aot_eager"`` runs the same tracing
without code generation (tests/accel/test_compile.py checks it against the uncompiled step).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MODES = ("auto", "off", "inductor", "aot_eager")


def resolve(mode: str, device: torch.device) -> str | None:
    """The torch.compile backend for `mode` on `device`, or None (nothing compiled)."""
    if mode not in MODES:
        raise ValueError(f"compile: must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "inductor" if device.type == "cuda" else None
    return None if mode == "off" else mode


RECOMPILE_LIMIT = 64  # compiled shapes per part: a scaling sweep meets a dozen in one process


def compiler(backend: str) -> Callable[[Callable], Callable]:
    """fn -> torch.compile(fn) with `backend`, specialised to static shapes. Raises dynamo's
    per-function recompile limit (default 8) to RECOMPILE_LIMIT (past the limit a part would
    silently run uncompiled), turns off donated buffers and traces compiled backwards outside
    autocast (see below): process-wide settings."""
    import torch._dynamo.config as dynamo_config
    import torch._functorch.config as functorch_config

    for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT))
            break
    # the surprise objective backpropagates through compiled parts with retain_graph / create_graph,
    # which compiled backwards that donate (free) their saved buffers refuse
    if hasattr(functorch_config, "donated_buffer"):
        functorch_config.donated_buffer = False
    # autocast wraps the forward only (the trainer calls backward outside it), as in eager mode; by
    # default AOTAutograd traces a compiled part's backward under the forward's autocast instead,
    # so the float32 memory loops (autocast disabled inside the forward) ran their backward matmuls
    # in bf16 (tests/accel/test_compile_memory.py)
    if hasattr(functorch_config, "backward_pass_autocast"):
        functorch_config.backward_pass_autocast = "off"

    def wrap(fn: Callable) -> Callable:
        return torch.compile(fn, backend=backend, dynamic=False)
    return wrap
