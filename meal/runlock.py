"""One run per directory: an exclusive lock on ``<run_dir>/.lock`` held for the whole run.

The lock is an ``flock`` on the open file, so the kernel drops it when the process ends in any way
(exit, exception, ``kill -9``, a node's Slurm job cancelled or requeued): a stale lock file never
blocks a later start. While held, the file names the holder (pid, host, start time), which a refused
second start reports. Processes forked by the holder (DataLoader workers) share its lock and outlive a
``kill -9`` of it by a few seconds; a start that finds the lock held by a dead process of this host waits
for them (up to ``ORPHAN_GRACE_S``). Under DDP only rank 0 takes it; the other ranks write nothing into
the directory.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import time
from pathlib import Path

from meal.errors import MealError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
ORPHAN_GRACE_S = 30.0  # how long a start waits for the forked workers of a dead holder to exit
HOLDER = re.compile(r"pid (?P<pid>\d+) on host (?P<host>\S+),")


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
            taken = _try_lock(fd)
        except OSError as exc:
            os.close(fd)  # a file system without flock
            log.warning("cannot lock %s (%s): a second start in this directory would not be refused", self.path, exc)
            return self
        holder = _read_holder(fd)
        if not taken and _dead_holder_of_this_host(holder):
            log.info(
                "%s is held by the workers of a process that has ended (%s): waiting for them", self.run_dir, holder
            )
            deadline = time.monotonic() + ORPHAN_GRACE_S
            while not taken and time.monotonic() < deadline:
                time.sleep(0.2)
                taken = _try_lock(fd)
        if not taken and not wait:
            os.close(fd)
            raise MealError(
                f"{self.run_dir}: another run is using this directory ({holder}); wait for it to end "
                "or stop it, or start this run in a new directory (hydra.run.dir=...)"
            )
        if not taken:
            log.info("%s is in use (%s): waiting for it", self.run_dir, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
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


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock if it is free; False when another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _dead_holder_of_this_host(holder: str) -> bool:
    """Whether the holder named in the lock file is a process of this host that no longer runs."""
    match = HOLDER.match(holder)
    if match is None or match["host"] != socket.gethostname():
        return False
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _read_holder(fd: int) -> str:
    """What the holder wrote into the lock file (it may not have written yet)."""
    try:
        text = os.pread(fd, 256, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not yet written its pid"
