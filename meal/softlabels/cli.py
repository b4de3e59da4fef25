"""Command-line plumbing shared by ``python -m meal.softlabels`` and ``python -m meal.bench``.

Both compose the same config tree as ``launch.py`` (``conf/`` plus ``experiments/``, Hydra
overrides on the command line) without starting a Hydra job, and build the run's pieces (data,
student, teachers) with :func:`meal.pieces.build_pieces`, as a training run does.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, open_dict

from meal.entry import run_entry_point

if TYPE_CHECKING:  # the tools sit above the app; their imports of it happen when they run
    from meal.pieces import RunPieces

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


def build_pieces(cfg: DictConfig, **options: Any) -> RunPieces:
    """:func:`meal.pieces.build_pieces` for a command-line tool: a teacher the zoo lacks is trained first
    when the teacher set allows it, as a training run would."""
    from meal.app import train_missing_teacher
    from meal.pieces import build_pieces as build

    return build(cfg, train_missing=lambda m, p: train_missing_teacher(cfg, m, p), **options)


def setup_logging() -> None:
    """Log INFO lines to stderr (stdout is kept for machine-readable output)."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
    )


def run_cli(main: Any, argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)`: a user error ends in one logged `error:` line and exit status 2, Ctrl-C in 130."""
    return run_entry_point(main, argv)
