"""Tracking a run with Weights & Biases, without ever stopping training because of it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Seconds wandb.init may wait for the server before giving up (then the run falls back to offline).
INIT_TIMEOUT_S = 30.0


def start_wandb_run(mode: str, run_dir: Path, run_id: str, **init_kwargs: Any) -> Any:
    """Start (or resume) W&B run ``run_id`` with its files under ``<run_dir>/wandb``.

    ``console="off"``: the run directory already keeps the job's log and the launcher keeps its
    stdout/stderr, and W&B's stream capture does not mix well with the launcher's own redirection.
    ``quiet=True`` keeps W&B's banner to a few lines; warnings still show.
    ``reinit="create_new"``: each tracker owns its run object, so several sequential jobs in one
    process (Hydra's basic launcher) do not finish each other's runs.
    """
    import wandb

    settings = wandb.Settings(init_timeout=INIT_TIMEOUT_S, console="off", quiet=True)
    return wandb.init(
        dir=str(run_dir),
        id=run_id,
        resume="allow",
        mode=mode,
        reinit="create_new",
        settings=settings,
        **init_kwargs,
    )


def reset_wandb(exit_code: int = 0) -> None:
    """Shut down W&B's background service process and wait for it to exit.

    Its exit frees a run id that a failed start left registered there, and it is the point at which
    the service has written out the ``.wandb`` files of finished runs (``run.finish()`` returns
    before that). The next run in the process starts a new service.
    """
    import wandb

    try:
        wandb.teardown(exit_code=exit_code)
    except (Exception, SystemExit) as exc:  # W&B's clean-up failing must not stop the job either.
        logger.debug("wandb.teardown() failed: %r", exc)


class WandbTracker:
    """A started W&B run behind the :class:`~meal.tracking.base.Tracker` calls.

    Any exception raised inside W&B is logged once as a warning, after which the tracker records
    nothing more (``mode`` becomes ``none``); :meth:`finish` still tries to close the run.
    """

    def __init__(self, run: Any, mode: str) -> None:
        self._run = run
        self._mode = mode
        self._run_id: str = run.id
        self._healthy = True
        self._finished = False
        self._first_step = int(getattr(run, "starting_step", 0) or 0)
        self._told_skipped_steps = False

    @property
    def run_id(self) -> str:
        """The W&B run id (also stored in ``<run_dir>/wandb_id``)."""
        return self._run_id

    @property
    def mode(self) -> str:
        """``online`` or ``offline`` (also after :meth:`finish`); ``none`` once W&B failed."""
        return self._mode if self._healthy else "none"

    @property
    def _active(self) -> bool:
        return self._healthy and not self._finished

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log ``metrics`` at global ``step``.

        A resumed online run continues after the last step the server holds; steps below that were
        logged before the restart and are skipped here rather than rejected one by one by W&B.
        """
        if not self._active:
            return
        if step < self._first_step:
            if not self._told_skipped_steps:
                self._told_skipped_steps = True
                logger.info(
                    "W&B run %s resumes at step %d; metrics of earlier steps are not logged again",
                    self._run_id,
                    self._first_step,
                )
            return
        self._call("log", self._run.log, _plain_values(metrics), step=step)

    def summary(self, values: dict[str, object]) -> None:
        """Set summary values of the run."""
        if self._active:
            self._call("summary", self._run.summary.update, _plain_values(values))

    def mark_preempting(self) -> None:
        """Mark the run as preempted, so W&B shows it as such until it resumes."""
        if self._active:
            self._call("mark_preempting", self._run.mark_preempting)

    def finish(self, exit_code: int = 0) -> None:
        """Finish the run with ``exit_code`` (non-zero shows it as failed). Later calls do nothing.

        When this returns, the run's files under ``<run_dir>/wandb`` are complete (W&B's service
        process has been shut down; any other W&B run of this process is finished with it).
        """
        if self._finished:
            return
        self._finished = True
        try:
            self._run.finish(exit_code=exit_code)
        except Exception as exc:
            level = logging.WARNING if self._healthy else logging.DEBUG
            logger.log(level, "W&B failed to finish run %s (%s: %s)", self._run_id, type(exc).__name__, exc)
        reset_wandb(exit_code)

    def _call(self, action: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call into W&B; on an exception warn once and stop recording."""
        try:
            function(*args, **kwargs)
        except Exception as exc:
            self._healthy = False
            logger.warning(
                "W&B failed in %s (%s: %s); continuing with files only",
                action,
                type(exc).__name__,
                exc,
            )


def _plain_values(values: dict[str, Any]) -> dict[str, Any]:
    """Turn 0-d tensors and numpy scalars into Python numbers; leave everything else as it is."""
    plain = {}
    for key, value in values.items():
        if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
            value = value.item()
        plain[key] = value
    return plain
