"""Atomic checkpoints: write to a temporary file beside the target, fsync, then rename.

A crash while writing leaves the previous checkpoint intact (and at most a stray temporary file,
which `remove_stale` deletes at the next start); a reader never sees half a file. Checkpoints hold
tensors and plain Python values only and load with ``weights_only=True``: a file someone sent you
cannot run code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from nlcore.errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pt"


def save(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The payload `save` wrote; a missing, truncated or foreign file raises CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume; start a new run instead")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one message naming it
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0][:200]}): "
                              f"it is damaged or not an nlcore checkpoint; delete it and rerun with "
                              f"--overwrite to start the run again") from e
    if not isinstance(payload, dict) or "step" not in payload or "config" not in payload:
        raise CheckpointError(f"{path} is not an nlcore checkpoint (no step or config): delete it and "
                              f"rerun with --overwrite")
    return payload


def remove_stale(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed `save` left in `folder`; returns what was removed."""
    gone = []
    for p in Path(folder).glob(f"{CHECKPOINT_NAME}.*.tmp"):
        p.unlink(missing_ok=True)
        gone.append(p)
    return gone
