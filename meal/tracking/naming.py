"""Readable W&B run names and sweep groups."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from meal.keys import is_not_swept, override_key

log = logging.getLogger(__name__)


def _hydra_config() -> Any:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get()
    except (ImportError, ValueError):
        return None


def _sweep_keys(sweep_dir: Path) -> set[str] | None:
    """The keys a multirun sweeps (``seed=0,1,2``, ``optim.lr=range(...)``, sweeper params), read from
    the sweep's manifest.json; None when it cannot be read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from meal.sweep_manifest import MANIFEST

    try:
        manifest = json.loads((sweep_dir / MANIFEST).read_text(encoding="utf-8"))
        lines = [str(o) for o in manifest.get("overrides") or []]
        lines += [f"{k}={v}" for k, v in (manifest.get("sweeper_params") or {}).items()]
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception as exc:  # a name is never worth failing a run for
        log.debug("no sweep keys from %s: %s", sweep_dir / MANIFEST, exc)
        return None
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def _swept_overrides() -> list[str]:
    """The job's overrides that say what the run is: in a sweep, those of the swept keys only."""
    hc = _hydra_config()
    if hc is None:
        return []
    overrides = list(hc.overrides.task)
    swept = _sweep_keys(Path(hc.sweep.dir)) if str(hc.mode) == "RunMode.MULTIRUN" else None
    kept = []
    for item in overrides:
        key = override_key(item)
        if is_not_swept(key):  # where and how the run executes, and the seed (shown at the end)
            continue
        if swept is None or key.split("@")[0] in swept:
            kept.append(item.lstrip("+"))
    return kept


def run_name(cfg: Any) -> str:
    """method, student, teacher set, the swept values (all overrides in a single run) and the seed,
    e.g. ``meal_v1 fmnist_tiny<-fmnist_trio method.gamma=[0.5] s0``."""
    name = f"{cfg.method.name} {cfg.student.arch}"
    if cfg.teachers.members and cfg.method.name != "ce":
        name += f"<-{cfg.teachers.name}"
    extras = [o for o in _swept_overrides() if not o.startswith(("method=", "student", "teachers="))]
    if extras:
        name += " " + " ".join(extras)
    return f"{name} s{cfg.seed}"


def group_name(logger_group: str | None, experiment: str, directory: str | Path) -> str:
    """`logger.group` if set, else ``<experiment>/<name of directory>`` (the sweep's, or the run's own)."""
    if logger_group:
        return str(logger_group)
    return f"{experiment}/{Path(str(directory)).name}"


def run_group(cfg: Any, run_dir: Path) -> str:
    """The W&B group: `logger.group` if set; for a sweep job, experiment + sweep directory name;
    for a single run, the run's own experiment + directory name."""
    hc = _hydra_config()
    in_sweep = hc is not None and str(hc.mode) == "RunMode.MULTIRUN"
    return group_name(cfg.logger.group, cfg.experiment, hc.sweep.dir if in_sweep else run_dir)
