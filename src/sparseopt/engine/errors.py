"""The engine's exceptions and the exit status of a diverged run.

Every command catches these: :class:`ConfigError` is a usage error (exit 2),
:class:`NonFiniteLossError` exits with :data:`EXIT_DIVERGED`, :class:`OutputWriteError`
with 1 and :class:`TrainingInterrupted` with ``128 + signum``.
"""

from __future__ import annotations

import signal
from pathlib import Path

__all__ = [
    "EXIT_DIVERGED",
    "ConfigError",
    "NonFiniteLossError",
    "OutputWriteError",
    "TrainingError",
    "TrainingInterrupted",
    "diverged",
    "interrupted",
]

#: Exit code of the command line when the loss became NaN/Inf.
EXIT_DIVERGED = 3


class ConfigError(ValueError):
    """The configuration cannot be run: unknown name, invalid option, unusable run dir."""


class TrainingError(RuntimeError):
    """Training stopped before the last epoch."""


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or infinite; the update was not applied.

    Attributes:
        epoch, step: where it happened (1-based epoch, 0-based batch index).
        checkpoint: the last good checkpoint, or ``None``.
    """

    def __init__(self, message: str, *, epoch: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.checkpoint = checkpoint


class OutputWriteError(TrainingError):
    """A file of the run could not be written (disk full, permissions); exit status 1.

    Files are written atomically, so the previous version of the file (e.g. the last
    good checkpoint) is intact.
    """


class TrainingInterrupted(TrainingError):
    """A signal (or ``KeyboardInterrupt``) stopped training; a checkpoint was written.

    Attributes:
        signum: the signal number (``SIGINT`` for ``KeyboardInterrupt``).
        run_dir: the run directory to resume (``sparseopt train --resume RUN_DIR``).
        exit_code: ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, *, signum: int, run_dir: Path | None) -> None:
        super().__init__(message)
        self.signum = signum
        self.run_dir = run_dir

    @property
    def exit_code(self) -> int:
        """Conventional shell exit status of a process killed by ``signum``."""
        return 128 + int(self.signum)


def diverged(
    what: str, epoch: int, step: int, checkpoint: Path | None, saved_epoch: int, hint: str
) -> NonFiniteLossError:
    """The error of a run whose loss or weights became NaN/Inf: what happened, the last
    good checkpoint and ``hint`` (how to retrain)."""
    return NonFiniteLossError(
        f"training diverged: {what}. The last good checkpoint (epoch {saved_epoch}) is "
        f"{checkpoint}. {hint}",
        epoch=epoch,
        step=step,
        checkpoint=checkpoint,
    )


def interrupted(
    signum: int | None, where: str, run_dir: Path | None, out: str | None
) -> TrainingInterrupted:
    """The error of a run stopped by ``signum`` (default SIGINT) after its checkpoint."""
    signum = int(signum or signal.SIGINT)
    run = run_dir or out
    return TrainingInterrupted(
        f"interrupted by {signal.Signals(signum).name} {where}; checkpoint saved in {run}. "
        f"Resume with: sparseopt train --resume {run}",
        signum=signum,
        run_dir=run_dir,
    )
