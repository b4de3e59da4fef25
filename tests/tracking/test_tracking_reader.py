"""Reading W&B transaction logs: records spanning blocks, damaged tails, missing files."""

from __future__ import annotations

from pathlib import Path

import pytest

from meal.errors import MealError
from meal.tracking import LoggerConfig, build_tracker, read_wandb_run
from meal.tracking.offline_reader import iter_records


def offline_run(run_dir: Path, rows: int, payload: str = "") -> Path:
    """Log ``rows`` rows (each with ``payload``) to an offline run; return its ``.wandb`` file."""
    tracker = build_tracker(LoggerConfig(mode="offline"), run_dir, {"a": 1}, name="n", group="g")
    for step in range(1, rows + 1):
        tracker.log({"step_value": step, "payload": payload}, step=step)
    tracker.finish(exit_code=0)
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    return path


def test_records_larger_than_a_block_are_reassembled(tmp_path: Path) -> None:
    payload = "x" * 100_000
    path = offline_run(tmp_path, rows=2, payload=payload)
    assert path.stat().st_size > 3 * 32768
    history = read_wandb_run(tmp_path)["history"]
    assert [row["step_value"] for row in history] == [1, 2]
    assert all(row["payload"] == payload for row in history)


def test_damaged_tail_keeps_earlier_records(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = offline_run(tmp_path, rows=3)
    complete = read_wandb_run(tmp_path)
    assert complete["exit_code"] == 0
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    damaged = read_wandb_run(tmp_path)
    assert damaged["exit_code"] is None
    assert damaged["history"] == complete["history"]
    assert any("damaged record" in message for message in caplog.messages)


def test_not_a_wandb_file(tmp_path: Path) -> None:
    path = tmp_path / "run-x.wandb"
    path.write_bytes(b"hello world")
    with pytest.raises(MealError, match="not a W&B transaction log"):
        list(iter_records(path))


def test_missing_run_files(tmp_path: Path) -> None:
    with pytest.raises(MealError, match=r"holds no W&B run files"):
        read_wandb_run(tmp_path)


@pytest.mark.slow
def test_reads_the_run_named_in_wandb_id(tmp_path: Path) -> None:
    offline_run(tmp_path, rows=1)
    first_id = (tmp_path / "wandb_id").read_text().strip()
    (tmp_path / "wandb_id").unlink()
    offline_run_second = build_tracker(LoggerConfig(mode="offline"), tmp_path, {}, name="n", group="g")
    offline_run_second.finish()
    second_id = offline_run_second.run_id
    assert second_id != first_id
    assert read_wandb_run(tmp_path)["run_id"] == second_id
    assert read_wandb_run(tmp_path, run_id=first_id)["history"][0]["step_value"] == 1
    (tmp_path / "wandb_id").unlink()
    assert read_wandb_run(tmp_path)["run_id"] == second_id
