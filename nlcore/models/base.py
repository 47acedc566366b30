"""The interface every nlcore sequence model follows, so one trainer fits them all.

A model maps input ids ``x`` (B, T) and an explicit recurrent ``state`` to logits (B, T, V)
and the next state. State is a flat ``dict[str, Tensor]`` whose tensors are all batch-first
(dim 0 is the row), so carrying, detaching, resetting rows, resizing the batch and moving
devices are generic (``nlcore.state``). Stateless models (a Transformer) return ``{}``.

Document resets inside a window arrive as ``Resets``: a (B, T) mask (True where x[b, t] is
the first character of a new document, so row b must start from the zero state there) and
the host-side tuple of positions t > 0 where any row resets. The positions are computed on
the host from the data, so models can split a window without a device synchronisation.

Levels: ``level_of(param_name) -> level name`` is the model's default assignment of its
parameters to CMS levels. ``tap(name, y)`` marks a level's output activation y_l; by default
it is the identity, and objectives such as surprise install a ``tap_fn`` to hook it (and say in
``tap_names`` which names it acts on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

State = dict[str, torch.Tensor]


def state_dtype(model: nn.Module) -> torch.dtype:
    """float32, or float64 for a float64 model: the dtype recurrent state is carried in."""
    return torch.promote_types(next(model.parameters()).dtype, torch.float32)


def split_state(state: State, i: int) -> State:
    """Layer i's part of a stacked model's state (keys "i.<name>"), with the prefix removed."""
    p = f"{i}."
    return {k[len(p):]: v for k, v in state.items() if k.startswith(p)}


def join_state(parts: list[State]) -> State:
    """The inverse of `split_state`: one state dict with layer i's keys prefixed "i."."""
    return {f"{i}.{k}": v for i, st in enumerate(parts) for k, v in st.items()}


class Resets(NamedTuple):
    mask: torch.Tensor  # (B, T) bool, on the model's device
    cuts: tuple[int, ...]  # positions 0 < t < T where some row resets (host ints, sorted)


class SequenceModel(nn.Module):
    """Base class: subclasses implement ``init_state``, ``forward`` and ``level_of``."""

    tap_fn: Callable[[str, torch.Tensor], torch.Tensor] | None = None
    uses_targets = False  # True: forward also takes `targets` (B, T), the next characters (HOPE)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return {}

    def level_of(self, param_name: str) -> str:
        raise NotImplementedError

    def io_level(self, param_name: str) -> str | None:
        """The level of the embedding (`embed.*`: `embed_level`) and of the output head with its final
        norm (`head.*`, `norm_out.*`: `head_level`); None for any other parameter."""
        top = param_name.split(".")[0]
        if top == "embed":
            return getattr(self, "embed_level", "fast")
        if top in ("head", "norm_out"):
            return getattr(self, "head_level", "fast")
        return None

    def levels(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Named parameters grouped by CMS level (every parameter exactly once)."""
        out: dict[str, list[tuple[str, nn.Parameter]]] = {}
        for n, p in self.named_parameters():
            out.setdefault(self.level_of(n), []).append((n, p))
        return out

    tap_names: frozenset[str] | None = None  # the names tap_fn acts on (None: any); others are identity

    def tap(self, name: str, y: torch.Tensor) -> torch.Tensor:
        return y if self.tap_fn is None else self.tap_fn(name, y)

    def hooked(self, name: str) -> bool:
        """Whether ``tap(name, y)`` may be anything but the identity (a model may then fuse across
        the taps that are not hooked)."""
        return self.tap_fn is not None and (self.tap_names is None or name in self.tap_names)

    def compile_parts(self, compile_fn: Callable[[Callable], Callable]) -> None:
        """Compile the parts this model routes through `part` (nlcore.accel.compile); by default the
        model names none. Subclasses list theirs in ``compiled_parts``."""
        self._compiled = {name: compile_fn(getattr(self, name)) for name in self.compiled_parts}

    compiled_parts: tuple[str, ...] = ()  # names of methods that `part` may return compiled

    def part(self, name: str) -> Callable:
        """The method `name`, compiled if `compile_parts` compiled it."""
        compiled = self.__dict__.get("_compiled")
        return compiled[name] if compiled and name in compiled else getattr(self, name)

    def forward(self, x: torch.Tensor, state: State | None = None,
                resets: Resets | None = None) -> tuple[torch.Tensor, State]:
        raise NotImplementedError
