"""Failures a user can act on. Each message names what is wrong and what to do about it.

`python -m nlcore` prints such an error as one line (``error: ...``) and exits non-zero; with
``--debug`` or ``NLCORE_DEBUG=1`` it shows the traceback instead. Configuration mistakes stay
`ValueError` / `KeyError` (exit code 2); the classes here exit with code 1. docs/errors.md lists
every message.
"""

from __future__ import annotations


class NlcoreError(Exception):
    """A failure the user can fix; the message says how."""


class DataError(NlcoreError):
    """A corpus that cannot be found or read, or that differs from the one a run started with."""


class RunDirError(NlcoreError):
    """An output folder that would mix two runs, or that holds nothing to resume."""


class RunFailedError(NlcoreError):
    """Runs of a grid that stopped without a result (not a divergence, which is a result); their
    train.log says why."""


class StoppedError(NlcoreError):
    """Training stopped on a termination signal (SIGTERM, as `timeout` sends) at a logged step, its
    checkpoint saved there: the same command with --resume continues it."""


class CheckpointError(NlcoreError):
    """A checkpoint that cannot be read or does not belong to this run."""


class NonFiniteError(NlcoreError):
    """Training diverged: a non-finite loss, gradient or parameter; the message names the step and
    the level, also kept as attributes."""

    def __init__(self, message: str, *, step: int | None = None, level: str | None = None) -> None:
        super().__init__(message)
        self.step, self.level = step, level
