"""Command-line plumbing shared by ``python -m meal.softlabels`` and ``python -m meal.bench``.

Both compose the same config tree as ``launch.py`` (``conf/`` plus ``experiments/``, Hydra
overrides on the command line) without starting a Hydra job, and build the run's pieces (data,
student, teachers) with the functions a training run uses.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict

from meal.entry import run_entry_point

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


def compose_config(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/config.yaml`` with `overrides`, resolving run paths against `output_dir`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from meal.config import register
    from meal.config.experiments import check_experiment_choices

    os.environ.setdefault("MEAL_ROOT", str(REPO))
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    check_experiment_choices(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@dataclass
class RunPieces:
    """What a training run builds before its method: device, data, student and teachers."""

    device: torch.device
    data: Any
    student: torch.nn.Module | None
    teachers: list[Any]


def build_pieces(cfg: DictConfig, student: bool = True, random_teachers: bool = False) -> RunPieces:
    """Check `cfg` (:func:`meal.preflight.check_before_work`), then build the device, data, (student) and
    teachers as ``meal.app.train`` does.

    Missing zoo teachers are trained first when the teacher set allows it. `random_teachers` builds the
    teacher architectures with random weights instead (for speed measurements only).
    """
    from meal.app import build_student, train_missing_teacher
    from meal.core.teacher import Teacher
    from meal.data import build_data
    from meal.engine.environment import configure_determinism, seed_everything, select_device
    from meal.models import build_model
    from meal.preflight import check_before_work
    from meal.teachers import freeze, load_teachers, member_name

    check_before_work(cfg)
    if cfg.trainer.threads:
        torch.set_num_threads(int(cfg.trainer.threads))
    seed_everything(int(cfg.seed))
    configure_determinism(cfg.trainer.deterministic)
    device = select_device(cfg.trainer.device)
    data = build_data(cfg.data, Path(cfg.paths.data_dir), int(cfg.seed), device)
    model = build_student(cfg, data, device) if student else None
    if random_teachers:
        teachers = [
            Teacher(
                member_name(m),
                freeze(
                    build_model(
                        m.arch, data.num_classes, data.in_channels, data.image_size, key=f"teachers.members[{i}].arch"
                    ).to(device)
                ),
            )
            for i, m in enumerate(cfg.teachers.members)
        ]
    else:
        teachers = load_teachers(cfg, data, device, lambda m, p: train_missing_teacher(cfg, m, p))
    return RunPieces(device, data, model, teachers)


def setup_logging() -> None:
    """Log INFO lines to stderr (stdout is kept for machine-readable output)."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
    )


def run_cli(main: Any, argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)`: a user error ends in one logged `error:` line and exit status 2, Ctrl-C in 130."""
    return run_entry_point(main, argv)
