"""One tiny real distillation run (KD from two saved teachers, synthetic data with a validation split)
shared by the evaluation, objective and export tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra.core.global_hydra import GlobalHydra

from meal.app import run
from tests.conftest import compose_config
from tests.softlabels.toy import SIZE, save_teachers

EPOCHS = 3


@dataclass
class FinishedRun:
    """A finished run: its directory, result.json, metrics.jsonl lines, returned value and teacher files."""

    run_dir: Path
    result: dict[str, Any]
    metrics: list[dict[str, Any]]
    returned: float
    teacher_files: list[Path]
    overrides: list[str]


def kd_overrides(tmp: Path, teacher_files: list[Path]) -> list[str]:
    """A KD run on 12x12 synthetic images from two teacher files, with a quarter held out for validation."""
    members = ",".join(f"{{arch:fmnist_tiny,checkpoint:'{p}'}}" for p in teacher_files)
    return [
        "method=kd",
        "data=synthetic",
        "data.in_channels=1",
        f"data.image_size={SIZE}",
        "data.train_size=96",
        "data.test_size=40",
        "data.batch_size=16",
        "data.val_split=0.25",
        "data.mean=[0.5]",
        "data.std=[0.25]",
        "teachers=none",
        f"teachers.members=[{members}]",
        "logger=none",
        f"trainer.epochs={EPOCHS}",
        "trainer.progress=off",
        "optim.lr=0.2",
        f"paths.cache_dir={tmp / 'cache'}",
        f"paths.zoo={tmp / 'zoo'}",
    ]


@pytest.fixture(scope="session")
def kd_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    tmp = tmp_path_factory.mktemp("kd_run")
    teacher_files = save_teachers(tmp)
    run_dir = tmp / "run"
    overrides = kd_overrides(tmp, teacher_files)
    try:
        returned = run(compose_config(overrides, run_dir))
    finally:
        GlobalHydra.instance().clear()
    result = json.loads((run_dir / "result.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return FinishedRun(run_dir, result, metrics, returned, teacher_files, overrides)
