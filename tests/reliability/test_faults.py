"""Faults during training: a NaN loss, a full disk while checkpointing, W&B failing.

Runs are in-process (``meal.app.train`` on a composed config) on a tiny synthetic data set, with the
fault injected at a known step, so each test takes a few seconds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import meal.core.io as atomic_io
from meal.app import main, train
from meal.core.result import Result
from meal.engine.checkpoint import load_checkpoint
from meal.engine.trainer import NonFiniteLossError
from meal.errors import CheckpointError
from meal.methods.base import StepOutput
from meal.methods.ce import CrossEntropy
from tests.conftest import compose_config

# every test trains in-process runs of a few epochs with a fault injected
pytestmark = pytest.mark.slow

# 4 steps per epoch, 3 epochs; last.pt is written at the end of each epoch (steps 4, 8, 12).
TINY = [
    "data=synthetic",
    "data.train_size=128",
    "data.test_size=64",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "method=ce",
    "teachers=none",
    "logger=none",
    "trainer.epochs=3",
    "trainer.deterministic=true",
    "trainer.progress=off",
    "optim.lr=0.05",
    "schedule=constant",
]
STEPS_PER_EPOCH = 4


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No W&B credentials or settings of the machine reach these runs."""
    for key in list(os.environ):
        if key.startswith("WANDB_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("MEAL_ZOO", str(tmp_path / "zoo"))


def _run(run_dir: Path, *extra: str) -> Result:
    return train(compose_config([*TINY, *extra], run_dir), run_dir)


def _student(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["student"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of TINY."""
    run_dir = tmp_path_factory.mktemp("reference")
    _run(run_dir)
    return run_dir


@contextlib.contextmanager
def poison(steps: set[int], value: float = float("nan")) -> Iterator[None]:
    """Multiply the loss of the given global steps (0-based) by `value` (NaN or inf)."""
    original: Callable[..., StepOutput] = CrossEntropy.training_step

    def poisoned(self: CrossEntropy, batch: Any, step: int) -> StepOutput:
        out = original(self, batch, step)
        if step in steps:
            out.loss = out.loss * value
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CrossEntropy, "training_step", poisoned)
        yield


# ----------------------------------------------------------------------------------- NaN / inf
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, reference: Path, value: float) -> None:
    at_epoch_1 = tmp_path / "epoch1"
    _run(at_epoch_1, f"trainer.max_steps={STEPS_PER_EPOCH}")
    run_dir = tmp_path / "run"
    with (
        poison({6}, value),
        pytest.raises(  # the 7th step, in epoch 2
            NonFiniteLossError,
            match=rf"loss became {value} at epoch 2, step 7; the last good checkpoint \S+last\.pt is "
            r"kept \(restart the run in the same directory with trainer\.nonfinite=skip to skip such steps, or start a "
            r"new run with a lower optim\.lr or with trainer\.grad_clip set\)$",
        ),
    ):
        _run(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["global_step"] == STEPS_PER_EPOCH
    assert _same(_student(last), _student(at_epoch_1 / "checkpoints" / "last.pt")), "not the state before the NaN"
    assert not (run_dir / "result.json").exists()

    resumed = _run(run_dir)  # the kept checkpoint is usable: the run continues as if nothing happened
    assert resumed.status == "completed"
    assert _same(_student(last), _student(reference / "checkpoints" / "last.pt"))


def test_nonfinite_loss_is_one_error_line_from_the_entry_point(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with poison({1}), caplog.at_level(logging.ERROR, logger="meal.app"), pytest.raises(SystemExit) as exit_info:
        main(compose_config(TINY, tmp_path / "run"))
    assert exit_info.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert errors[0].startswith("error: loss became nan at epoch 1, step 2; no checkpoint was written yet")


def test_run_stopped_by_nan_goes_on_when_restarted_with_skip(tmp_path: Path) -> None:
    with poison({6}):
        with pytest.raises(NonFiniteLossError):
            _run(tmp_path)
        result = _run(tmp_path, "trainer.nonfinite=skip")  # same directory: the NaN policy may change
    assert result.status == "completed" and result.skipped_steps == 1


def test_skip_policy_counts_skipped_steps(tmp_path: Path) -> None:
    with poison({5, 9}):
        result = _run(tmp_path, "trainer.nonfinite=skip", "trainer.max_skipped_steps=2")
    assert result.status == "completed" and result.steps == 3 * STEPS_PER_EPOCH
    assert result.skipped_steps == 2
    assert json.loads((tmp_path / "result.json").read_text())["skipped_steps"] == 2
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m.get("skipped_steps", 0) for m in metrics] == [0, 1, 2]
    assert all(torch.isfinite(v).all() for v in _student(tmp_path / "checkpoints" / "last.pt").values())


def test_skip_policy_stops_after_max_skipped_steps(tmp_path: Path) -> None:
    with (
        poison({5, 6, 9}),
        pytest.raises(
            NonFiniteLossError,
            match=r"at epoch 3, step 10; the last good checkpoint \S+ is kept \(restart the run in the "
            r"same directory with a larger trainer\.max_skipped_steps \(2 skipped so far\)",
        ),
    ):
        _run(tmp_path, "trainer.nonfinite=skip", "trainer.max_skipped_steps=2")
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["skipped_steps"] == 2


# ----------------------------------------------------------------------------------- full disk
class _FullDisk:
    """os.fdopen stand-in: the `fail_on`-th temporary file of last.pt gets half its bytes, then ENOSPC."""

    def __init__(self, fail_on: int) -> None:
        self.fail_on = fail_on
        self.seen = 0
        self.real = os.fdopen

    def __call__(self, fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = self.real(fd, *args, **kwargs)
        if not os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.pt."):
            return handle
        self.seen += 1
        if self.seen != self.fail_on:
            return handle
        write = handle.write

        def half_then_full(data: bytes) -> int:
            write(data[: len(data) // 2])
            handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        handle.write = half_then_full
        return handle


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name open files")
def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Path
) -> None:
    run_dir = tmp_path / "run"
    with (
        monkeypatch.context() as patch,
        pytest.raises(
            CheckpointError,
            match=r"last\.pt: cannot write the checkpoint \(No space left on device\); the previous "
            r"last\.pt is kept \(free disk space",
        ),
    ):
        patch.setattr(atomic_io.os, "fdopen", _FullDisk(fail_on=2))  # the save at the end of epoch 2
        _run(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    assert not list(ckpt_dir.glob(".*.tmp")), "the partial temporary file is removed"
    assert load_checkpoint(ckpt_dir / "last.pt")["global_step"] == STEPS_PER_EPOCH

    resumed = _run(run_dir)
    assert resumed.status == "completed"
    assert _same(_student(ckpt_dir / "last.pt"), _student(reference / "checkpoints" / "last.pt"))
    lines = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines == [4, 8, 12], "the epoch-2 line written before the failed save is written once"


# ----------------------------------------------------------------------------------- W&B
@pytest.mark.parametrize("mode", ["offline", "online"])
def test_wandb_failing_to_start_does_not_stop_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    import wandb

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("wandb service did not start")

    monkeypatch.setattr(wandb, "init", refuse)
    with caplog.at_level(logging.WARNING, logger="meal.tracking"):
        result = _run(tmp_path, "logger=wandb", f"logger.mode={mode}")
    assert result.status == "completed" and result.wandb_id is None
    assert json.loads((tmp_path / "result.json").read_text())["top1"] == result.top1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        w.startswith("W&B failed to start (RuntimeError: wandb service did not start); continuing with files only")
        for w in warnings
    ), warnings
    if mode == "online":
        assert any("falling back to offline mode" in w for w in warnings), warnings


class _FlakyRun:
    """A started W&B run whose service goes away after `healthy_logs` calls to log()."""

    id = "flaky01"
    starting_step = 0

    def __init__(self, healthy_logs: int) -> None:
        self.healthy_logs = healthy_logs
        self.logged: list[int] = []
        self.finished_with: int | None = None
        self.summary = self

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if len(self.logged) >= self.healthy_logs:
            raise ConnectionResetError("wandb service connection lost")
        self.logged.append(step)

    def update(self, values: dict[str, Any]) -> None:
        raise ConnectionResetError("wandb service connection lost")

    def mark_preempting(self) -> None:
        """Nothing to mark."""

    def finish(self, exit_code: int = 0) -> None:
        self.finished_with = exit_code
        raise ConnectionResetError("wandb service connection lost")


@pytest.fixture
def flaky_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FlakyRun]:
    run = _FlakyRun(healthy_logs=3)
    monkeypatch.setattr("meal.tracking.build.start_wandb_run", lambda *args, **kwargs: run)
    yield run


def test_wandb_lost_mid_run_does_not_stop_training(
    tmp_path: Path, flaky_run: _FlakyRun, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="meal.tracking"):
        result = _run(tmp_path, "logger=wandb", "logger.mode=offline", "trainer.log_every_steps=1")
    assert result.status == "completed" and result.steps == 3 * STEPS_PER_EPOCH
    assert (tmp_path / "result.json").is_file()
    assert len(flaky_run.logged) == 3, "nothing is sent once the service is gone"
    assert flaky_run.finished_with == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    lost = [w for w in warnings if w.startswith("W&B failed in log (ConnectionResetError")]
    assert len(lost) == 1 and lost[0].endswith("continuing with files only"), warnings
    metrics = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 3, "metrics.jsonl keeps every epoch"
