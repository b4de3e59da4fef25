"""What the training engine sees of a tracker, and the tracker that does nothing."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    """An experiment tracker. Its calls never raise because of the tracking backend."""

    @property
    def run_id(self) -> str | None:
        """The backend's run id, or ``None`` when nothing is tracked."""
        ...

    @property
    def mode(self) -> str:
        """``online``, ``offline``, ``disabled`` or ``none`` (nothing tracked)."""
        ...

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record ``metrics`` at global step ``step`` (steps must not decrease)."""
        ...

    def summary(self, values: dict[str, object]) -> None:
        """Set run summary values (final accuracies and the like)."""
        ...

    def mark_preempting(self) -> None:
        """Tell the backend the run is about to be preempted and will resume."""
        ...

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; a non-zero ``exit_code`` marks it failed. Calling it again does nothing."""
        ...


class NullTracker:
    """A tracker that records nothing (``logger.name=none``, ranks other than 0, or a failed backend)."""

    def __init__(self, mode: str = "none", run_id: str | None = None) -> None:
        self._mode = mode
        self._run_id = run_id

    @property
    def run_id(self) -> str | None:
        """The run id given at construction (``None`` unless a backend started and failed)."""
        return self._run_id

    @property
    def mode(self) -> str:
        """``none``, or ``disabled`` when W&B was configured with ``mode: disabled``."""
        return self._mode

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Do nothing."""

    def summary(self, values: dict[str, object]) -> None:
        """Do nothing."""

    def mark_preempting(self) -> None:
        """Do nothing."""

    def finish(self, exit_code: int = 0) -> None:
        """Do nothing."""
