"""One run per directory: an exclusive lock on ``<run_dir>/.lock`` held for the whole run.

The lock is an ``flock`` on the open file, so the kernel drops it when the process ends in any way
(exit, exception, ``kill -9``, a node's Slurm job cancelled or requeued): a stale lock file never
blocks a later start. While held, the file names the holder (pid, host, start time), which a refused
second start reports. Under DDP only rank 0 takes it; the other ranks write nothing into the directory.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path

from meal.errors import MealError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class RunDirLock:
    """An exclusive lock on one run directory; :meth:`release` (or the process's end) frees it."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, wait: bool = False) -> RunDirLock:
        """Take the lock; while another process holds it, wait for it (`wait`) or raise MealError naming it."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                holder = _read_holder(fd)
                os.close(fd)
                raise MealError(
                    f"{self.run_dir}: another run is using this directory ({holder}); wait for it to end "
                    "or stop it, or start this run in a new directory (hydra.run.dir=...)"
                ) from None
            log.info("%s is in use (%s): waiting for it", self.run_dir, _read_holder(fd))
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            os.close(fd)  # a file system without flock
            log.warning("cannot lock %s (%s): a second start in this directory would not be refused", self.path, exc)
            return self
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}, started {stamp}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Free the lock (the file stays: removing it would let two later starts lock two different files)."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunDirLock:
        return self if self.fd is not None else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """What the holder wrote into the lock file (it may not have written yet)."""
    try:
        text = os.pread(fd, 256, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not yet written its pid"
