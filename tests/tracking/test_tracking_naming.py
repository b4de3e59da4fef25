"""W&B run names: method, student, teachers, what the run changes (in a sweep: the swept values), seed."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from meal.tracking.naming import run_group, run_name
from tests.conftest import compose_config

JOB_OVERRIDES = [
    "method=meal_v1",
    "method.gamma=[0.5]",
    "data.train_subset=1000",
    "trainer.epochs=2",
    "hydra/launcher=slurm",
    "logger.project=x",
    "seed=1",
]


@pytest.fixture(autouse=True)
def _clear_hydra() -> Iterator[None]:
    yield
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def _as_sweep_job(sweep_dir: Path, manifest: dict | None) -> DictConfig:
    """The config of job 0 of a multirun into `sweep_dir`, with HydraConfig set as in the job."""
    cfg = compose_config([o for o in JOB_OVERRIDES if not o.startswith("hydra/")], run_dir=sweep_dir / "0")
    hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
    OmegaConf.set_readonly(hydra_cfg.hydra, False)
    with open_dict(hydra_cfg):
        hydra_cfg.hydra.mode = "MULTIRUN"
        hydra_cfg.hydra.sweep.dir = str(sweep_dir)
        hydra_cfg.hydra.overrides.task = JOB_OVERRIDES
    HydraConfig.instance().set_config(hydra_cfg)
    if manifest is not None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "manifest.json").write_text(json.dumps(manifest))
    return cfg


def test_single_run_name_lists_its_overrides(tmp_path: Path) -> None:
    cfg = compose_config(["method=meal_v1", "method.gamma=[0.5]", "trainer.epochs=2", "seed=3"], run_dir=tmp_path)
    assert run_name(cfg) == "meal_v1 fmnist_tiny<-fmnist_trio method.gamma=[0.5] trainer.epochs=2 s3"
    assert run_group(cfg, tmp_path / "2024-01-01_00-00-00") == "quickstart/2024-01-01_00-00-00"


def test_sweep_job_name_lists_the_swept_values_only(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    manifest = {
        "overrides": [
            "method=meal_v1",
            "method.gamma=[0.5],[1.0]",
            "data.train_subset=1000",
            "trainer.epochs=1,2",
            "seed=0,1",
        ],
        "sweeper_params": None,
    }
    cfg = _as_sweep_job(sweep, manifest)
    assert run_name(cfg) == "meal_v1 fmnist_tiny<-fmnist_trio method.gamma=[0.5] trainer.epochs=2 s1"
    assert run_group(cfg, sweep / "0") == "quickstart/sweep"


def test_sweeper_params_count_as_swept(tmp_path: Path) -> None:
    manifest = {"overrides": ["method=meal_v1", "method.gamma=[0.5]"], "sweeper_params": {"trainer.epochs": "1,2"}}
    cfg = _as_sweep_job(tmp_path, manifest)
    assert run_name(cfg) == "meal_v1 fmnist_tiny<-fmnist_trio trainer.epochs=2 s1"


def test_sweep_without_manifest_falls_back_to_all_overrides(tmp_path: Path) -> None:
    cfg = _as_sweep_job(tmp_path, None)
    assert (
        run_name(cfg) == "meal_v1 fmnist_tiny<-fmnist_trio method.gamma=[0.5] data.train_subset=1000 "
        "trainer.epochs=2 s1"
    )
