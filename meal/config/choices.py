"""Checking a config value against its allowed choices, with the one-line error every key gets."""

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
