"""The W&B summary holds every field of result.json, its lists and nulls included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from meal.app import train
from meal.tracking import read_wandb_run
from tests.conftest import compose_config

# the test trains a run in-process
pytestmark = pytest.mark.slow

SYNTHETIC = [
    "method=ce",
    "teachers=none",
    "data=synthetic",
    "data.train_size=64",
    "data.test_size=32",
    "data.in_channels=1",
    "data.image_size=12",
    "data.mean=[0.5]",
    "data.std=[0.25]",
    "trainer.epochs=1",
    "trainer.progress=off",
    "logger=wandb",
    "logger.mode=offline",
]


def test_summary_has_every_result_field_lists_and_nulls_included(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    try:
        train(compose_config(SYNTHETIC, run_dir), run_dir)
    finally:
        GlobalHydra.instance().clear()
    result = json.loads((run_dir / "result.json").read_text())
    summary = read_wandb_run(run_dir)["summary"]
    assert result["teachers"] == [] and result["teacher_set"] is None and result["ensemble_top1"] is None
    for key, value in result.items():
        assert key in summary, key
        assert summary[key] == value, key
