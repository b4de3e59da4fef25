"""PreemptionGuard: which signals set the save-at-the-next-step flag, and what happens after the save."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from meal.engine.preemption import PreemptionGuard, preemption_signal

SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


@pytest.fixture(autouse=True)
def _restore_handlers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class SubmititLike:
    """Handlers as submitit installs them in a job: SIGTERM is ignored, its own signal requeues and exits."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def bypass(self, signum: int, frame: FrameType | None) -> None:
        self.calls.append(f"bypass {signal.Signals(signum).name}")

    def requeue(self, signum: int, frame: FrameType | None) -> None:
        self.calls.append(f"requeue {signal.Signals(signum).name}")
        raise SystemExit(-1)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.bypass)
        signal.signal(preemption_signal(), self.requeue)


def test_preemption_signal_follows_submitit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert preemption_signal() == signal.SIGUSR2
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "SIGHUP")
    assert preemption_signal() == signal.SIGHUP
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert preemption_signal() == signal.SIGUSR1


def test_submitit_signal_is_saved_for_then_handed_to_submitit() -> None:
    submitit = SubmititLike()
    submitit.install()
    guard = PreemptionGuard()
    guard.install()

    os.kill(os.getpid(), signal.SIGUSR2)

    assert guard.requested and guard.signum == signal.SIGUSR2
    assert submitit.calls == [], "nothing is handed over before the checkpoint is saved"
    with pytest.raises(SystemExit) as exit_info:
        guard.hand_over()
    assert exit_info.value.code == -1
    assert submitit.calls == ["requeue SIGUSR2"]
    assert signal.getsignal(signal.SIGUSR2) == submitit.requeue, "submitit's handlers are back"


def test_sigterm_under_submitit_goes_to_submitit_and_training_goes_on() -> None:
    """Slurm preempts with SIGTERM, then submitit's signal: SIGTERM alone must not end the job."""
    submitit = SubmititLike()
    submitit.install()
    guard = PreemptionGuard()
    guard.install()

    os.kill(os.getpid(), signal.SIGTERM)
    assert not guard.requested
    assert submitit.calls == ["bypass SIGTERM"]

    os.kill(os.getpid(), signal.SIGUSR2)
    assert guard.signum == signal.SIGUSR2
    with pytest.raises(SystemExit):
        guard.hand_over()
    assert submitit.calls == ["bypass SIGTERM", "requeue SIGUSR2"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2])
def test_without_submitit_a_signal_saves_then_exits(sig: signal.Signals) -> None:
    guard = PreemptionGuard()
    guard.install()

    os.kill(os.getpid(), sig)

    assert guard.signum == sig
    with pytest.raises(SystemExit) as exit_info:
        guard.hand_over()
    assert exit_info.value.code == 128 + sig


def test_ctrl_c_saves_then_interrupts() -> None:
    guard = PreemptionGuard()
    guard.install()

    os.kill(os.getpid(), signal.SIGINT)

    assert guard.signum == signal.SIGINT, "Python's own Ctrl-C handler waits for the checkpoint"
    with pytest.raises(KeyboardInterrupt):
        guard.hand_over()


def test_uninstall_restores_previous_handlers() -> None:
    submitit = SubmititLike()
    submitit.install()
    guard = PreemptionGuard()
    guard.install()
    guard.uninstall()
    assert signal.getsignal(signal.SIGTERM) == submitit.bypass
    assert signal.getsignal(signal.SIGUSR2) == submitit.requeue
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
