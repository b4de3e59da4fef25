"""The W&B tracker, checked by reading back the run files W&B wrote."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import wandb
from omegaconf import OmegaConf

from meal.errors import ConfigError, MealError
from meal.tracking import LoggerConfig, NullTracker, Tracker, build_tracker, read_wandb_run

CONFIG = {"method": {"name": "kd", "temperature": 4.0}, "seed": 0, "epochs": 3}


def start(run_dir: Path, rank: int = 0, **logger_fields: Any) -> Tracker:
    """A tracker for ``run_dir`` with LoggerConfig defaults (mode auto) changed by ``logger_fields``."""
    cfg = OmegaConf.structured(LoggerConfig(**logger_fields))
    return build_tracker(cfg, run_dir, CONFIG, name="kd-s0", group="sweep-a", tags=["kd"], rank=rank)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and record.name.startswith("meal")
    ]


def test_offline_run_reads_back_history_summary_and_config(tmp_path: Path) -> None:
    tracker = start(tmp_path, mode="offline", tags=["zoo"], run_name="custom-name")
    assert isinstance(tracker, Tracker)
    assert tracker.mode == "offline"
    for step in (1, 2, 3):
        tracker.log({"train/loss": 1.0 / step, "val/top1": 10.0 * step}, step=step)
    tracker.summary({"top1": 61.5, "teacher_top1": {"a": 60.0, "b": 58.5}})
    tracker.finish()
    tracker.finish()
    tracker.log({"train/loss": 0.0}, step=4)
    assert tracker.mode == "offline"

    run = read_wandb_run(tmp_path)
    assert run["run_id"] == tracker.run_id == (tmp_path / "wandb_id").read_text().strip()
    assert [row["_step"] for row in run["history"]] == [1, 2, 3]
    assert [row["train/loss"] for row in run["history"]] == [1.0, 0.5, 1.0 / 3]
    assert [row["val/top1"] for row in run["history"]] == [10.0, 20.0, 30.0]
    assert run["summary"]["top1"] == 61.5
    assert run["summary"]["teacher_top1"] == {"a": 60.0, "b": 58.5}
    assert run["summary"]["val/top1"] == 30.0
    assert run["config"] == CONFIG
    assert run["exit_code"] == 0


def test_run_metadata_comes_from_arguments_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    real_init = wandb.init

    def recording_init(**kwargs: Any) -> Any:
        seen.update(kwargs)
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", recording_init)
    tracker = start(tmp_path, mode="offline", group="my-group", tags=["zoo", "kd", "x" * 70], entity="team")
    tracker.finish()
    assert seen["group"] == "my-group"
    assert seen["name"] == "kd-s0"
    assert seen["job_type"] == "train"
    assert seen["tags"] == ["kd", "zoo", "x" * 64]
    assert seen["entity"] == "team"
    assert seen["resume"] == "allow"
    assert seen["dir"] == str(tmp_path)


@pytest.mark.slow
def test_auto_mode_without_key_is_offline_and_restart_resumes_the_same_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meal")
    first = start(tmp_path)
    assert first.mode == "offline"
    assert any("W&B offline: no API key configured" in m and "wandb sync" in m for m in caplog.messages)
    run_id = first.run_id
    assert (tmp_path / "wandb_id").read_text().strip() == run_id
    for step in (1, 2, 3):
        first.log({"loss": float(step)}, step=step)
    first.mark_preempting()
    first.finish(exit_code=1)

    second = start(tmp_path)
    assert second.run_id == run_id
    for step in (3, 4, 5):
        second.log({"loss": 10.0 * step}, step=step)
    second.finish()

    run = read_wandb_run(tmp_path)
    assert run["run_id"] == run_id
    assert len(run["segments"]) == 2
    assert [s["preempting"] for s in run["segments"]] == [True, False]
    assert [row["_step"] for row in run["history"]] == [1, 2, 3, 4, 5]
    assert [row["loss"] for row in run["history"]] == [1.0, 2.0, 3.0, 40.0, 50.0]
    assert run["exit_code"] == 0

    other_dir = tmp_path / "other"
    other = start(other_dir)
    other.finish()
    assert other.run_id != run_id
    assert read_wandb_run(other_dir)["run_id"] == other.run_id


@pytest.mark.parametrize(("rank", "name"), [(0, "none"), (1, "wandb"), (3, "none")])
def test_no_tracker_writes_nothing(tmp_path: Path, rank: int, name: str) -> None:
    tracker = start(tmp_path, rank=rank, name=name, mode="offline")
    assert isinstance(tracker, NullTracker)
    assert tracker.mode == "none"
    assert tracker.run_id is None
    tracker.log({"loss": 1.0}, step=1)
    tracker.summary({"top1": 1.0})
    tracker.mark_preempting()
    tracker.finish(exit_code=1)
    tracker.finish()
    assert list(tmp_path.iterdir()) == []


def test_disabled_mode_writes_nothing(tmp_path: Path) -> None:
    tracker = start(tmp_path, mode="disabled")
    assert tracker.mode == "disabled"
    tracker.log({"loss": 1.0}, step=1)
    tracker.finish()
    assert list(tmp_path.iterdir()) == []


def test_unknown_logger_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^logger\.name: unknown logger 'tensorboard'"):
        build_tracker({"name": "tensorboard"}, tmp_path, {}, name="n", group="g")


def test_init_failure_leaves_a_working_null_tracker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing_init(**kwargs: Any) -> Any:
        raise RuntimeError("service failed")

    monkeypatch.setattr(wandb, "init", failing_init)
    tracker = start(tmp_path, mode="offline")
    assert tracker.mode == "none"
    tracker.log({"loss": 1.0}, step=1)
    tracker.summary({"top1": 1.0})
    tracker.mark_preempting()
    tracker.finish(exit_code=0)
    assert warnings_of(caplog) == ["W&B failed to start (RuntimeError: service failed); continuing with files only"]


def test_online_init_failure_falls_back_to_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_init = wandb.init

    def offline_only_init(**kwargs: Any) -> Any:
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("no route to host")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", offline_only_init)
    tracker = start(tmp_path, mode="online")
    assert tracker.mode == "offline"
    tracker.log({"loss": 1.0}, step=1)
    tracker.finish()
    (warning,) = warnings_of(caplog)
    assert warning.startswith("W&B failed to start online (CommError: no route to host); falling back to offline mode")
    run = read_wandb_run(tmp_path)
    assert run["run_id"] == tracker.run_id
    assert [row["loss"] for row in run["history"]] == [1.0]


def test_log_failure_warns_once_and_stops_logging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = start(tmp_path, mode="offline")
    tracker.log({"loss": 1.0}, step=1)

    def failing_log(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", failing_log)
    tracker.log({"loss": 2.0}, step=2)
    tracker.log({"loss": 3.0}, step=3)
    tracker.summary({"top1": 1.0})
    assert tracker.mode == "none"
    monkeypatch.undo()
    tracker.finish()
    assert warnings_of(caplog) == ["W&B failed in log (OSError: disk full); continuing with files only"]
    run = read_wandb_run(tmp_path)
    assert [row["loss"] for row in run["history"]] == [1.0]
    assert "top1" not in run["summary"]


def test_failed_run_records_exit_code(tmp_path: Path) -> None:
    tracker = start(tmp_path, mode="offline")
    tracker.log({"loss": 1.0}, step=1)
    tracker.finish(exit_code=1)
    tracker.finish(exit_code=0)
    run = read_wandb_run(tmp_path)
    assert run["exit_code"] == 1
    assert run["segments"][0]["exit_code"] == 1


def test_tensor_and_numpy_scalars_are_logged_as_numbers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    numpy = pytest.importorskip("numpy")
    tracker = start(tmp_path, mode="offline")
    tracker.log({"loss": torch.tensor(0.25), "top1": numpy.float32(0.5)}, step=1)
    tracker.finish()
    (row,) = read_wandb_run(tmp_path)["history"]
    assert row["loss"] == 0.25
    assert row["top1"] == 0.5


def test_bad_stored_id_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "wandb_id").write_text("not an id/\n")
    with pytest.raises(MealError, match="wandb_id: holds 'not an id/'"):
        start(tmp_path, mode="offline")


def test_choice_values_reach_the_run_config_as_plain_strings(tmp_path: Path) -> None:
    """A typed config's choice keys hold Enum members; W&B records the values a user wrote (``none``)."""
    from meal.config.schema import AdversarialConfig, AdversarialMode, NonFinitePolicy
    from meal.tracking.build import _plain_config

    typed = OmegaConf.create({"method": OmegaConf.structured(AdversarialConfig(adversarial="none"))})
    assert isinstance(typed.method.adversarial, AdversarialMode)
    plain = _plain_config(typed)
    assert type(plain["method"]["adversarial"]) is str and plain["method"]["adversarial"] == "none"

    members = {"method": {"adversarial": AdversarialMode.none}, "trainer": [NonFinitePolicy.stop]}
    tracker = build_tracker(OmegaConf.structured(LoggerConfig(mode="offline")), tmp_path, members, name="n", group="g")
    tracker.finish()
    config = read_wandb_run(tmp_path)["config"]
    assert config == {"method": {"adversarial": "none"}, "trainer": ["stop"]}
