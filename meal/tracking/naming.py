"""Readable W&B run names and sweep groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Override keys that name where a run goes, not what it is.
_NOT_IN_NAME = ("hydra", "paths", "logger", "cluster", "resources", "seed")


def _swept_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []
    kept = []
    for item in overrides:
        key = item.lstrip("+~").split("=", 1)[0]
        if key.split(".")[0].split("/")[0] not in _NOT_IN_NAME:
            kept.append(item.lstrip("+"))
    return kept


def run_name(cfg: Any) -> str:
    """method, student, teacher set, the overridden values and the seed, e.g.
    ``meal_v1 fmnist_tiny<-fmnist_trio method.gamma=[0.5] s0``."""
    name = f"{cfg.method.name} {cfg.student.arch}"
    if cfg.teachers.members and cfg.method.name != "ce":
        name += f"<-{cfg.teachers.name}"
    extras = [o for o in _swept_overrides() if not o.startswith(("method=", "student", "teachers="))]
    if extras:
        name += " " + " ".join(extras)
    return f"{name} s{cfg.seed}"


def run_group(cfg: Any, run_dir: Path) -> str:
    """The W&B group: `logger.group` if set; for a sweep job, experiment + sweep directory name;
    for a single run, the run's own experiment + directory name."""
    if cfg.logger.group:
        return str(cfg.logger.group)
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        if str(hc.mode) == "RunMode.MULTIRUN":
            return f"{cfg.experiment}/{Path(hc.sweep.dir).name}"
    except (ImportError, ValueError):
        pass
    return f"{cfg.experiment}/{Path(run_dir).name}"


