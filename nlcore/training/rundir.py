"""A run directory: what it holds, and how a run starts, resumes and ends in it.

    meta.json      written at the first step: the config, the command, the revision, the device,
                   the data files read (path, size, SHA-256); completed at the end (wall time,
                   corpus statistics, tokenizer)
    metrics.jsonl  one line per log interval
    checkpoint.pt  the last state whose parameters were checked finite (atomic)
    summary.json   how the run ended: status "finished" (with the held-out numbers), "diverged"
                   (the step and level) or "stopped" (the step); a resume rewrites it

A folder that already holds a run is never silently reused: a new run there needs
``overwrite``, a resume needs a checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from nlcore import repro
from nlcore.errors import RunDirError
from nlcore.results import read_json, write_json
from nlcore.training.checkpoint import CHECKPOINT_NAME, remove_stale

RUN_FILES = ("meta.json", "summary.json", "metrics.jsonl", CHECKPOINT_NAME)


class StopSignal:
    """While entered, SIGTERM sets `asked` instead of killing the process, so training can stop
    between two steps and save a whole step's checkpoint. Off the main thread, where Python cannot
    install a handler, or with `enabled=False`, the signal keeps its usual effect."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled, self.asked, self._old = enabled, False, None

    def __enter__(self) -> StopSignal:
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._ask)
        return self

    def _ask(self, signum, frame) -> None:
        self.asked = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
            self._old = None


def status(out: str | os.PathLike) -> str | None:
    """The status summary.json records ("finished", "diverged", "stopped"), "finished" for a
    summary with held-out numbers but no status, None without a summary."""
    path = Path(out) / "summary.json"
    if not path.is_file():
        return None
    summary = read_json(path)
    return summary.get("status") or ("finished" if summary.get("valid_bpc") is not None else None)


def prepare(out: str | os.PathLike, *, resume: bool, overwrite: bool) -> None:
    """Check `out` before a run starts in it (errors name the folder and what to do), remove what
    `overwrite` replaces and any temporary file a killed checkpoint write left."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file: give a folder for the run")
    if resume and overwrite:
        raise RunDirError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    present = [name for name in RUN_FILES if (out / name).exists()]
    if resume:
        if not (out / CHECKPOINT_NAME).is_file() and status(out) != "finished":
            raise RunDirError(f"nothing to resume in {out}: it holds no {CHECKPOINT_NAME}"
                              + (" (the run stopped before its first checkpoint)" if present else "")
                              + "; drop --resume to start a new run there"
                              + (" with --overwrite" if present else ""))
    elif present and not overwrite:
        raise RunDirError(f"{out} already holds a run ({', '.join(present)}): pass --resume to continue it, "
                          f"--overwrite to replace it, or choose another --out")
    elif present:
        for name in present:
            (out / name).unlink()
    if out.is_dir():
        remove_stale(out)


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_files(paths: Iterable[str]) -> list[dict]:
    """[{path, bytes, sha256}] of the files a run reads."""
    return [{"path": str(p), "bytes": os.path.getsize(p), "sha256": sha256(p)} for p in paths]


def write_start(out: str | os.PathLike, *, config: Mapping, command: str | None, device, data: list[dict],
                resumed_at: int | None = None) -> Path:
    """meta.json as the run starts (or resumes at step `resumed_at`)."""
    meta = {
        "status": "running",
        "git": repro.git_info(),
        "command": command,
        "config": dict(config),
        "data_files": data,
        "device": str(device),
        "environment": repro.capture_environment(device),
        "utc_start": repro.utc_now(),
        "resumed_at_step": resumed_at,
    }
    return write_json(Path(out) / "meta.json", meta)


def write_end(out: str | os.PathLike, summary: Mapping, **meta_updates) -> None:
    """summary.json (with its status) and meta.json completed by `meta_updates`."""
    out = Path(out)
    meta_path = out / "meta.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    meta.update(meta_updates, status=summary.get("status"), utc_end=repro.utc_now())
    write_json(meta_path, meta)
    write_json(out / "summary.json", dict(summary))
