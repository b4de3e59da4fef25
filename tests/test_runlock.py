"""One run per directory: the lock names its holder, refuses a second start and dies with its process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from meal.errors import MealError
from meal.rundir import hold_run_dir
from meal.runlock import LOCK_FILE, RunDirLock

REPO = Path(__file__).resolve().parents[1]
HOLDER = (
    "import sys, time; from meal.runlock import RunDirLock; RunDirLock(sys.argv[1]).acquire(); print('locked', "
    "flush=True); time.sleep(600)"
)


def hold_in_subprocess(run_dir: Path) -> subprocess.Popen[str]:
    """A process that takes `run_dir`'s lock and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_the_lock_file_names_its_holder_and_refuses_a_second_taker(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunDirLock(run):
        assert (run / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} on host {socket.gethostname()}, started ")
        with pytest.raises(MealError) as info:
            RunDirLock(run).acquire()
        assert str(info.value).startswith(
            f"{run}: another run is using this directory (pid {os.getpid()} on host {socket.gethostname()}, started "
        )
        assert str(info.value).endswith(
            "; wait for it to end or stop it, or start this run in a new directory (hydra.run.dir=...)"
        )
    with RunDirLock(run) as again:  # released on exit
        assert again.fd is not None
    assert again.fd is None


def test_a_killed_holder_frees_the_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = hold_in_subprocess(run)
    try:
        with pytest.raises(
            MealError, match=rf"^{run}: another run is using this directory \(pid {holder.pid} on host "
        ):
            RunDirLock(run).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (run / LOCK_FILE).read_text().startswith(f"pid {holder.pid} "), "the dead holder's note stays"
    with RunDirLock(run) as lock:  # kill -9 left the file, not the lock
        assert lock.fd is not None
        assert (run / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} ")


def test_only_rank_0_takes_the_lock(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunDirLock(run):
        with hold_run_dir(run, rank0=False):  # another DDP rank of the same run: neither locks nor is refused
            pass
        with pytest.raises(MealError, match="another run is using this directory"), hold_run_dir(run, rank0=True):
            pass


@pytest.mark.slow
def test_a_waiting_taker_gets_the_lock_when_the_holder_ends(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = hold_in_subprocess(run)
    taken = threading.Event()

    def take() -> None:
        with RunDirLock(run).acquire(wait=True):
            taken.set()

    waiter = threading.Thread(target=take)
    waiter.start()
    try:
        assert not taken.wait(timeout=1.0), "the lock was taken while its holder lives"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    waiter.join(timeout=30)
    assert taken.is_set()


FORKING_HOLDER = (
    "import os, sys, time; from meal.runlock import RunDirLock; RunDirLock(sys.argv[1]).acquire()\n"
    "if os.fork() == 0:\n    time.sleep(2.0); os._exit(0)  # a worker sharing the lock, gone 2 s later\n"
    "print('locked', flush=True); time.sleep(600)"
)


@pytest.mark.slow
def test_a_start_after_kill_9_waits_for_the_dead_holders_workers(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", FORKING_HOLDER, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    started = time.monotonic()
    with RunDirLock(run) as lock:  # the orphaned worker still holds it: waited for, not refused
        assert lock.fd is not None
    assert 0.5 < time.monotonic() - started < 20
