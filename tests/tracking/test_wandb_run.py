"""Real `launch.py` runs with `logger=wandb` and no API key (offline, chosen automatically), read back
from the W&B run files: history against the global step, summary, config, run identity and exit codes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from meal.tracking import read_wandb_run
from tests.conftest import needs_fashion_mnist, run_launch

pytestmark = pytest.mark.slow

FMNIST_TINY = ["data.train_subset=1000", "data.test_subset=500", "trainer.log_every_steps=1", "logger=wandb"]
STEPS_PER_EPOCH = 8  # ceil(1000 / 128)
SYNTHETIC = [
    "data=synthetic",
    "data.train_size=256",
    "data.test_size=64",
    "data.in_channels=1",
    "data.image_size=28",
    "data.mean=[0.5]",
    "data.std=[0.5]",
    "student=fmnist_tiny",
]


@pytest.fixture
def auto_env(meal_env: dict[str, str]) -> dict[str, str]:
    """No WANDB_MODE and no API key (tests/tracking/conftest.py empties HOME): `mode: auto` must pick offline."""
    env = dict(meal_env)
    env.pop("WANDB_MODE", None)
    return env


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _launch_ok(args: list[str], env: dict[str, str]) -> str:
    proc = run_launch(args, env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


@needs_fashion_mnist
def test_history_summary_config_and_restart_in_the_same_run(tmp_path: Path, auto_env: dict[str, str]) -> None:
    run_dir = tmp_path / "ce_run"
    args = ["method=ce", "teachers=none", *FMNIST_TINY, "trainer.epochs=2", f"hydra.run.dir={run_dir}"]

    log = _launch_ok([*args, "trainer.max_steps=11"], auto_env)  # stops inside epoch 2
    assert "W&B offline: no API key configured" in log
    first_id = (run_dir / "wandb_id").read_text().strip()
    stopped = json.loads((run_dir / "result.json").read_text())
    assert stopped["status"] == "stopped" and stopped["steps"] == 11 and stopped["wandb_id"] == first_id

    log = _launch_ok(args, auto_env)  # the same directory: resumes the run and its W&B run
    assert "epoch 2, step 11 of 16" in log
    assert (run_dir / "wandb_id").read_text().strip() == first_id
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == 16 and result["wandb_id"] == first_id

    run = read_wandb_run(run_dir)
    assert run["run_id"] == first_id
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2
    assert [s["exit_code"] for s in run["segments"]] == [0, 0]
    assert run["exit_code"] == 0

    # Per-step rows: loss and LR at every global step, each step once across both starts.
    steps = [row for row in run["history"] if "train/loss" in row]
    assert [row["_step"] for row in steps] == list(range(1, 17))
    assert all(row["train/lr"] > 0 for row in steps)
    # The epoch mean of the logged step losses is the epoch's train_loss in metrics.jsonl, also for the
    # epoch the restart cut in two (its running sums come back from the checkpoint).
    epochs = _metrics(run_dir)
    assert [e["epoch"] for e in epochs] == [1, 2]
    for epoch in epochs:
        losses = [row["train/loss"] for row in steps if epoch["step"] - STEPS_PER_EPOCH < row["_step"] <= epoch["step"]]
        assert math.isclose(sum(losses) / len(losses), epoch["train_loss"], rel_tol=1e-6)
    # Per-epoch rows at the global step the epoch ended on, with the figures of metrics.jsonl.
    epoch_rows = [row for row in run["history"] if "epoch/top1" in row]
    assert [row["_step"] for row in epoch_rows] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    for row, epoch in zip(epoch_rows, epochs, strict=True):
        assert row["epoch"] == epoch["epoch"]
        for key in ("top1", "top5", "lr", "train_loss", "img_per_s"):
            assert row[f"epoch/{key}"] == pytest.approx(epoch[key])

    summary = run["summary"]
    for key in ("top1", "top5", "best_top1", "params", "img_per_s", "status", "steps", "wandb_id"):
        assert summary[key] == pytest.approx(result[key]) if isinstance(result[key], float) else result[key]

    config = run["config"]
    assert config["method"]["name"] == "ce" and config["seed"] == 0
    assert config["data"]["train_subset"] == 1000 and config["trainer"]["epochs"] == 2
    assert config["paths"]["output_dir"] == str(run_dir), "the config is stored resolved"
    assert "${" not in json.dumps(config)

    assert run["project"] == "meal" and run["job_type"] == "train"
    assert run["group"] == f"quickstart/{run_dir.name}", "a single run is its own group"
    assert run["name"].startswith("ce fmnist_tiny ") and run["name"].endswith(" s0")
    assert "data.train_subset=1000" in run["name"]
    assert run["tags"] == ["ce", "fashion_mnist"]


@needs_fashion_mnist
def test_distillation_run_logs_losses_and_teacher_accuracy(tmp_path: Path, auto_env: dict[str, str]) -> None:
    run_dir = tmp_path / "meal_run"
    _launch_ok(
        [
            "method=meal_v1",
            "teachers=fmnist_single",
            "teachers.train_missing=true",
            "teachers.training.epochs=1",
            *FMNIST_TINY,
            "trainer.epochs=1",
            f"hydra.run.dir={run_dir}",
        ],
        auto_env,
    )
    result = json.loads((run_dir / "result.json").read_text())
    run = read_wandb_run(run_dir)

    steps = [row for row in run["history"] if "train/loss" in row]
    assert [row["_step"] for row in steps] == list(range(1, STEPS_PER_EPOCH + 1))
    for key in ("train/sim_loss", "train/adv_loss", "train/d_loss", "train/lr"):
        assert all(math.isfinite(row[key]) for row in steps), key
    assert (
        run["summary"]["teacher_top1"]
        == result["teacher_top1"]
        == {"fmnist_cnn-s0": pytest.approx(result["teacher_top1"]["fmnist_cnn-s0"])}
    )
    assert run["summary"]["ensemble_top1"] == pytest.approx(result["ensemble_top1"])
    assert run["summary"]["top1"] == pytest.approx(result["top1"])
    assert run["name"].startswith("meal_v1 fmnist_tiny<-fmnist_single ")

    # The missing teacher was trained first, as a run of its own in the zoo: another directory, another id.
    teacher_dir = Path(auto_env["MEAL_ZOO"]) / "fashion_mnist" / "runs" / "fmnist_cnn-s0"
    teacher = read_wandb_run(teacher_dir)
    assert teacher["job_type"] == "teacher" and teacher["exit_code"] == 0
    assert teacher["run_id"] == (teacher_dir / "wandb_id").read_text().strip()
    assert teacher["run_id"] != run["run_id"] == result["wandb_id"]


@pytest.mark.parametrize(
    ("overrides", "damaged_checkpoint", "message"),
    [(["optim.lr=1e30"], False, "loss became nan"), ([], True, "last.pt")],
    ids=["nan-loss", "checkpoint-error-after-tracker-start"],
)
def test_failed_run_is_recorded_as_failed(
    tmp_path: Path, auto_env: dict[str, str], overrides: list[str], damaged_checkpoint: bool, message: str
) -> None:
    run_dir = tmp_path / "failing"
    if damaged_checkpoint:  # read at resume, after the tracker started: every config check has passed by then
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    proc = run_launch(
        [
            "method=ce",
            "teachers=none",
            *SYNTHETIC,
            "trainer.epochs=1",
            "logger=wandb",
            *overrides,
            f"hydra.run.dir={run_dir}",
        ],
        auto_env,
    )

    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and message in output, output[-3000:]
    assert not (run_dir / "result.json").exists()
    run = read_wandb_run(run_dir)
    assert run["run_id"] == (run_dir / "wandb_id").read_text().strip()
    assert run["exit_code"] not in (None, 0), "W&B shows the run as failed"
