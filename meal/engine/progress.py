"""Progress display readable in a terminal (one updating line) and in a Slurm log (periodic lines)."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("meal.progress")


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Report step progress: `\\r`-updated line on a TTY, a log line every `every` steps otherwise."""

    def __init__(self, total_steps: int, mode: str = "auto", every: int = 50, enabled: bool = True) -> None:
        self.total_steps = total_steps
        self.interactive = sys.stderr.isatty() if mode == "auto" else mode == "bar"
        self.every = max(every, 1)
        self.enabled = enabled and mode != "off"
        self.start = time.monotonic()
        self.start_step = 0

    def begin(self, step: int) -> None:
        """Mark the step counting starts from (after a resume)."""
        self.start = time.monotonic()
        self.start_step = step

    def update(self, step: int, epoch: int, epochs: int, values: dict[str, float]) -> None:
        """Show progress after global step `step` (1-based count of finished steps)."""
        if not self.enabled or (not self.interactive and step % self.every != 0):
            return
        elapsed = time.monotonic() - self.start
        done = max(step - self.start_step, 1)
        eta = elapsed / done * (self.total_steps - step)
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        line = (
            f"epoch {epoch + 1}/{epochs} step {step}/{self.total_steps} "
            f"[{_fmt_duration(elapsed)}<{_fmt_duration(eta)}] {shown}"
        )
        if self.interactive:
            sys.stderr.write("\r" + line[:160].ljust(100))
            sys.stderr.flush()
        else:
            log.info(line)

    def end_epoch(self) -> None:
        """Finish the current terminal line so the epoch summary starts on a new one."""
        if self.enabled and self.interactive:
            sys.stderr.write("\n")
            sys.stderr.flush()
