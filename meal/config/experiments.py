"""Experiment names: an option of an experiments/ group that does not exist is an error, not the default run.

The primary config lists the experiments/ groups (paper, ablation, zoo, ...) as *optional* defaults,
so that a plain ``python launch.py`` runs without one; Hydra then skips an option it cannot find.
:func:`check_experiment_choices` refuses such a choice, naming the group and listing its options.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path

from meal.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def experiments_dir() -> Path:
    """The experiments/ folder on Hydra's search path (``$MEAL_ROOT/experiments``)."""
    return Path(os.environ.get("MEAL_ROOT") or REPO) / "experiments"


def experiment_groups(root: Path) -> dict[str, list[str]]:
    """Each group folder under `root` that holds experiment files, with its options (``sub/name`` for subfolders)."""
    groups = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        options = sorted(str(f.relative_to(folder).with_suffix("")) for f in folder.rglob("*.yaml"))
        if options:
            groups[folder.name] = options
    return groups


def check_experiment_choices(choices: Mapping[str, str | None], root: Path | None = None) -> None:
    """Refuse a chosen experiment (Hydra's ``runtime.choices``) that is not a file of its experiments/ group."""
    root = root or experiments_dir()
    groups = experiment_groups(root)
    for group, choice in choices.items():
        if choice is None or group not in groups or choice in groups[group]:
            continue
        close = difflib.get_close_matches(str(choice), groups[group], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            group, f"no experiment '{choice}' in {root / group}{hint}", f"choose one of: {', '.join(groups[group])}"
        )
