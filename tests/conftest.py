"""Shared fixtures: in-process config composition and subprocess runs of launch.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MEAL_ROOT", str(REPO))
# One intra-op thread per process: several test processes may run at once on 2 cores, and
# oversubscribed OpenMP threads slow small CPU kernels down by an order of magnitude.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slurm and CUDA tests are slow too: `-m "not slow"` (the fast subset) leaves them out."""
    for item in items:
        if item.get_closest_marker("slow") is None and (
            item.get_closest_marker("slurm") is not None or item.get_closest_marker("cuda") is not None
        ):
            item.add_marker(pytest.mark.slow)


def compose_config(overrides: Sequence[str] = (), run_dir: Path | None = None) -> DictConfig:
    """Compose conf/ like launch.py does, with hydra's runtime values set so paths resolve."""
    from meal.config import register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir or REPO / "outputs" / "compose")
        cfg.hydra.runtime.cwd = str(REPO)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """Fixture form of :func:`compose_config`."""
    yield compose_config
    GlobalHydra.instance().clear()


def meal_environ(tmp_path: Path) -> dict[str, str]:
    """Environment for subprocess runs: offline W&B, zoo and caches under tmp_path."""
    env = dict(os.environ)
    env.update(
        {
            "MEAL_ROOT": str(REPO),
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "MEAL_ZOO": str(tmp_path / "zoo"),
            "MEAL_CACHE": str(tmp_path / "cache"),
            "MEAL_DATA": str(tmp_path / "data"),
            "PYTHONUNBUFFERED": "1",
            "HYDRA_FULL_ERROR": "0",
        }
    )
    env.pop("WANDB_API_KEY", None)
    return env


@pytest.fixture
def meal_env(tmp_path: Path) -> dict[str, str]:
    """Fixture form of :func:`meal_environ` (folders under the test's tmp_path)."""
    return meal_environ(tmp_path)


def run_launch(
    args: Sequence[str], env: dict[str, str], timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python launch.py ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args],
        env=env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def validate_experiment(cfg: DictConfig) -> None:
    """`validate` a composed experiment; one that needs `student.pretrained` must first refuse to start without it."""
    from meal.config.validate import validate
    from meal.errors import ConfigError

    if cfg.student.require_pretrained and not cfg.student.pretrained:
        with pytest.raises(ConfigError, match=r"student\.pretrained: this configuration starts the student"):
            validate(cfg)
        cfg.student.pretrained = "/path/to/weights.pth"
    validate(cfg)
