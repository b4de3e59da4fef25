"""End to end through launch.py on real Fashion-MNIST: supervised training and the MEAL v1 quickstart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import needs_fashion_mnist, run_launch

pytestmark = [pytest.mark.slow, needs_fashion_mnist]

RESULT_FIELDS = {
    "method",
    "student",
    "teachers",
    "dataset",
    "seed",
    "epochs",
    "top1",
    "top5",
    "best_top1",
    "teacher_top1",
    "ensemble_top1",
    "params",
    "img_per_s",
    "wall_s",
    "status",
    "wandb_id",
}


def test_supervised_training_reaches_80_percent(tmp_path: Path, meal_env: dict[str, str]) -> None:
    run = tmp_path / "ce"
    proc = run_launch(
        ["method=ce", "teachers=none", "logger=none", f"hydra.run.dir={run}", "trainer.export_to_zoo=true"], meal_env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed" and result["method"] == "ce" and result["teachers"] == []
    assert result["top1"] >= 80.0, result
    assert 0 < result["params"] < 50_000 and result["img_per_s"] > 0
    zoo_file = Path(meal_env["MEAL_ZOO"]) / "fashion_mnist" / f"{result['student']}-s0.pt"
    sidecar = json.loads(zoo_file.with_suffix(".json").read_text())
    assert sidecar["top1"] == result["top1"] and sidecar["classes"] == 10 and len(sidecar["sha256"]) == 64


def test_meal_v1_quickstart_trains_teachers_then_reuses_them(tmp_path: Path, meal_env: dict[str, str]) -> None:
    small = ["data.train_subset=3000", "teachers.training.epochs=3", "trainer.epochs=3"]
    first = tmp_path / "first"
    proc = run_launch([*small, f"hydra.run.dir={first}"], meal_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((first / "result.json").read_text())
    assert result.keys() >= RESULT_FIELDS
    assert result["method"] == "meal_v1" and result["status"] == "completed"
    assert len(result["teachers"]) == 3 and set(result["teacher_top1"]) == set(result["teachers"])
    assert result["top1"] > 50.0, "far above chance (10%)"
    assert all(v > 50.0 for v in result["teacher_top1"].values()) and result["ensemble_top1"] > 50.0
    epochs = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    for row in epochs:
        assert row["train_d_loss"] > 0 and row["train_sim_loss"] > 0 and "train_adv_loss" in row
    output = proc.stdout + proc.stderr
    assert "teacher fmnist_cnn-s0" in output and "ensemble (mean softmax)" in output

    zoo = Path(meal_env["MEAL_ZOO"]) / "fashion_mnist"
    stamps = {p.name: p.stat().st_mtime_ns for p in zoo.glob("*.pt")}
    assert len(stamps) == 3
    second = tmp_path / "second"
    proc = run_launch([*small, f"hydra.run.dir={second}", "logger=none"], meal_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training it first" not in proc.stdout + proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in zoo.glob("*.pt")} == stamps
    again = json.loads((second / "result.json").read_text())
    assert again["teacher_top1"] == result["teacher_top1"], "the same zoo teachers are reused"
