"""SIGINT/SIGTERM as a request to stop at the next step, with a checkpoint.

The first signal sets :attr:`StopSignals.signum` and puts the previous handler back,
so a second signal acts at once (the default: the process ends).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any

import torch

from sparseopt.engine.distributed import Dist, all_reduce_

__all__ = ["StopSignals"]


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag the training loop polls.

    Attributes:
        signum: the signal received (or requested with :meth:`request`), else ``None``.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask for a stop (``KeyboardInterrupt`` in a callback); the first request wins."""
        if self.signum is None:
            self.signum = int(signum)

    def install(self) -> None:
        """Catch SIGINT and SIGTERM (only possible in the main thread; else a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Put back the handlers found by :meth:`install`."""
        for sig, handler in self._old.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._old = {}

    def sync(self, ctx: Dist, nonfinite: bool) -> tuple[bool, bool]:
        """(some rank met a non-finite loss, some rank was signalled): the same answer on
        every rank, so that all stop at the same step."""
        if not ctx.distributed:
            return nonfinite, self.signum is not None
        flags = torch.tensor([float(nonfinite), float(self.signum or 0)], device=ctx.device)
        all_reduce_(flags, ctx, "max")
        if flags[1] > 0:
            self.request(int(flags[1]))
        return bool(flags[0] > 0), bool(flags[1] > 0)
