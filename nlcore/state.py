"""Persistent recurrent state across windows: carry, detach (truncated BPTT), reset policies.

The data stream cuts a split into B contiguous rows (``nlcore.data.streams``), so row b of
window i+1 continues row b of window i and a model's state for row b can be carried over.
After each update the carried state is detached: gradients flow within a window only
(truncated backpropagation through time with truncation length T).

Reset policies (``StateConfig.reset``):

* ``every_batch``: every window starts from the zero state (the prototype's baseline);
* ``never``: state is carried through the whole split (and zeroed when the stream wraps);
* ``doc``: carried, but row b is zeroed exactly at the first character of each new document,
  also in the middle of a window (the model splits its recurrence at those positions);
* ``every_n``: zeroed every N windows.

Rules for a changed batch: a different number of rows means a different cut of the corpus into
rows, so old row states describe other text: the state is replaced by the zero state (and the
change is counted in ``batch_changes``). A device move keeps every value (``to_device``).
"""

from __future__ import annotations

import numpy as np
import torch

from nlcore.config import StateConfig
from nlcore.models.base import Resets, State


def detach(state: State) -> State:
    return {k: v.detach() for k, v in state.items()}


def to_device(state: State, device: torch.device | str) -> State:
    return {k: v.to(device) for k, v in state.items()}


def batch_size_of(state: State) -> int | None:
    return next(iter(state.values())).shape[0] if state else None


def row_norms(state: State) -> torch.Tensor | None:
    """(B,) Euclidean norm of every row's full state (all tensors together); None if stateless."""
    if not state:
        return None
    sq = [v.float().reshape(v.shape[0], -1).pow(2).sum(1) for v in state.values()]
    return torch.stack(sq).sum(0).sqrt()


class DocCuts:
    """Host-side document-start layout of a stream, for `Resets` without device syncs.

    Mirrors the stream's layout: row b covers ids[b*L : (b+1)*L] and window i covers columns
    [i*T, (i+1)*T) of every row.
    """

    def __init__(self, doc_starts: torch.Tensor | np.ndarray | None, batch_size: int, seq_len: int,
                 row_len: int) -> None:
        self.T = seq_len
        if doc_starts is None:
            self.matrix = None
            return
        ds = np.asarray(doc_starts.cpu() if torch.is_tensor(doc_starts) else doc_starts, dtype=bool)
        self.matrix = ds[: batch_size * row_len].reshape(batch_size, row_len)  # (B, L)
        self.any_col = self.matrix.any(0)  # (L,)

    def window(self, i: int) -> tuple[np.ndarray | None, tuple[int, ...]]:
        """(mask (B, T') as numpy or None, cut positions t > 0) for window i."""
        if self.matrix is None:
            return None, ()
        s = i * self.T
        m = self.matrix[:, s: s + self.T]
        cuts = tuple(int(t) for t in np.flatnonzero(self.any_col[s + 1: s + m.shape[1]]) + 1)
        return m, cuts


class StateCarrier:
    """Holds one run's recurrent state and applies the reset policy window by window."""

    def __init__(self, model, cfg: StateConfig, batch_size: int, device, cuts: DocCuts | None = None,
                 *, detach: bool = True) -> None:
        self.model, self.cfg, self.device, self.cuts = model, cfg, device, cuts
        self.detach = detach  # False only for tests of exactness (full BPTT across windows)
        self.batch_size = batch_size
        self.state: State = model.init_state(batch_size, device)
        self.windows_since_reset = np.zeros(batch_size, dtype=np.int64)
        self.batch_changes = 0
        self.window_count = 0

    def reset(self) -> None:
        self.state = self.model.init_state(self.batch_size, self.device)
        self.windows_since_reset[:] = 0

    def begin(self, window_index: int, doc_start: torch.Tensor | None = None) -> tuple[State, Resets | None]:
        """The state to feed the model for window `window_index`, and document resets if any."""
        policy = self.cfg.reset
        if policy == "every_batch" or (policy == "every_n" and self.window_count % self.cfg.reset_every == 0):
            self.reset()
        resets = None
        if policy == "doc" and self.cuts is not None and self.cuts.matrix is not None:
            m, cuts = self.cuts.window(window_index)
            if m.any():
                mask = doc_start if doc_start is not None else torch.from_numpy(m).to(self.device)
                resets = Resets(mask, cuts)
                self.windows_since_reset[m.any(1)] = 0
        self.window_count += 1
        return self.state, resets

    def end(self, new_state: State) -> None:
        """Store the state produced by the window, detached (truncated BPTT)."""
        self.state = detach(new_state) if self.detach else dict(new_state)
        self.windows_since_reset += 1

    def resize(self, batch_size: int) -> None:
        """A different number of rows: zero state of the new size (see the module docstring)."""
        if batch_size != self.batch_size:
            self.batch_size = batch_size
            self.windows_since_reset = np.zeros(batch_size, dtype=np.int64)
            self.state = self.model.init_state(batch_size, self.device)
            self.batch_changes += 1

    def move(self, device) -> None:
        self.device = device
        self.state = to_device(self.state, device)

    def telemetry(self) -> dict:
        """State norm per row (moved to host: call at log time) and windows since reset."""
        n = row_norms(self.state)
        return {
            "state_norm_mean": None if n is None else float(n.mean()),
            "state_norm_max": None if n is None else float(n.max()),
            "windows_since_reset_mean": float(self.windows_since_reset.mean()),
            "windows_since_reset_min": int(self.windows_since_reset.min()),
        }

    def state_dict(self) -> dict:
        return {"state": {k: v.detach().cpu() for k, v in self.state.items()},
                "windows_since_reset": torch.from_numpy(self.windows_since_reset.copy()),  # a tensor: weights_only
                "window_count": self.window_count,
                "batch_changes": self.batch_changes}

    def load_state_dict(self, sd: dict) -> None:
        self.state = to_device(sd["state"], self.device)
        self.batch_size = batch_size_of(self.state) or self.batch_size
        self.windows_since_reset = torch.as_tensor(sd["windows_since_reset"]).cpu().numpy().astype(np.int64)
        self.window_count = int(sd["window_count"])
        self.batch_changes = int(sd["batch_changes"])
