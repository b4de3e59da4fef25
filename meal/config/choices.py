"""Checking a config value against its allowed choices, with the one-line error every key gets.

A choice key of the schemas is typed with a :class:`~meal.core.choice.Choice`, so a composed config
cannot hold another value (the same message comes from :mod:`meal.entry`); :func:`one_of` is for code
that may be given a plain string (a config built without the schemas).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meal.errors import ConfigError


def one_of(key: str, value: Any, allowed: Iterable[str]) -> None:
    """Raise ConfigError naming `key` unless `value` is one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(key, f"'{value}' is not a valid choice", f"choose one of: {', '.join(allowed)}")


def two_betas(key: str, betas: Any) -> None:
    """Raise ConfigError naming `key` unless `betas` holds exactly two values (Adam's beta1, beta2)."""
    if len(betas) != 2:
        raise ConfigError(key, f"needs 2 values (beta1, beta2), got {list(betas)}", f"e.g. {key}=[0.9,0.999]")
