"""Save-at-the-signal preemption handling, chained in front of submitit's own handler.

Slurm warns a job before preemption or timeout with a signal (SIGUSR2 under submitit, or
$SUBMITIT_PREEMPT_SIGNAL). The handler installed here only sets a flag; the training loop saves a
full checkpoint at the next step boundary and then calls the previous handler, which (under
submitit) requeues the job into the same run directory. SIGTERM and SIGINT are treated the same
way, so Ctrl-C or `kill` also leave a resumable checkpoint, unless another Python handler owns
them: submitit ignores SIGTERM, which Slurm sends just before its own signal when it preempts a
job, so under submitit SIGTERM goes straight to submitit's handler and the job waits for the
preemption signal that requeues it.
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


def preemption_signal() -> signal.Signals:
    """The signal submitit uses to warn of preemption/timeout."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]


class PreemptionGuard:
    """Turns termination signals into a flag the training loop polls at step boundaries."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """True once a signal has arrived."""
        return self.signum is not None

    def install(self) -> None:
        """Chain the flag-setting handler in front of the current handlers (main thread only)."""
        for sig in {preemption_signal(), signal.SIGTERM, signal.SIGINT}:
            try:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                self._previous.pop(sig, None)

    def uninstall(self) -> None:
        """Restore the handlers that were there before :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum)
        if signum != preemption_signal() and _owned_elsewhere(previous):
            previous(signum, frame)
            return
        if self.signum is None:
            log.warning("received %s: saving a checkpoint at the next step boundary", signal.Signals(signum).name)
        self.signum = signum

    def hand_over(self) -> None:
        """After the checkpoint is saved: run the previous handler (submitit requeues), else exit."""
        signum = self.signum
        previous = self._previous.get(signum) if signum is not None else None
        self.uninstall()
        if callable(previous):
            previous(signum, None)
        raise SystemExit(128 + (signum or 0))


def _owned_elsewhere(handler: Any) -> bool:
    """True for a handler installed by other Python code (submitit's), not Python's own Ctrl-C handler."""
    return callable(handler) and handler is not signal.default_int_handler
