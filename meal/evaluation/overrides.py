"""Command-line overrides of a finished run's config: ``data=<option>`` and ``teachers=<option>`` take that
option of the config group from conf/, ``key=value`` changes one existing key (``data.test_subset=500``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from meal.errors import ConfigError

#: config groups an evaluation may swap for another option
GROUPS = ("data", "teachers")


def _conf_dir() -> Path:
    return Path(os.environ.get("MEAL_ROOT", Path(__file__).resolve().parents[2])) / "conf"


def _group_nodes(choices: dict[str, str]) -> dict[str, dict]:
    """Each chosen group option, composed from conf/ as launch.py would, its interpolations left in place."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from meal.config import register

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(_conf_dir())):
            composed = compose("config", overrides=[f"{group}={option}" for group, option in choices.items()])
    finally:
        GlobalHydra.instance().clear()
    return {group: OmegaConf.to_container(composed[group], resolve=False, enum_to_str=True) for group in choices}


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> tuple[DictConfig, set[str]]:
    """`cfg` with the overrides applied, and the groups that were replaced (``{"teachers"}``, ...)."""
    choices: dict[str, str] = {}
    values: list[tuple[str, str]] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("command line", f"cannot parse '{item}'", "write overrides as key=value")
        if key in GROUPS:
            choices[key] = value
        elif "." in key:
            values.append((key, value))
        else:
            raise ConfigError(key, "cannot be overridden here", f"choose {'= or '.join(GROUPS)}= or a dotted key")
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False, enum_to_str=True))
    if choices:
        with open_dict(cfg):
            for group, node in _group_nodes(choices).items():
                cfg[group] = node
    for key, value in values:
        if OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            raise ConfigError(key, "no such key in the run's config", "check the key's spelling")
        OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"v={value}"]).v, merge=True)
    OmegaConf.resolve(cfg)
    return cfg, set(choices)
