"""Folders a run writes into, checked before it starts: one that cannot be written is a config error."""

from __future__ import annotations

import tempfile
from pathlib import Path

from meal.errors import ConfigError


def check_writable(key: str, folder: Path, fix: str) -> None:
    """Refuse `folder` (set by config `key`) when it cannot be created or written.

    Tries a temporary file in the folder, or in its nearest existing parent when the folder does not
    exist yet (nothing is left behind), since permission bits say little for root or read-only mounts.
    """
    existing = Path(folder).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(key, f"{folder} cannot be created: {existing} is not a folder", fix)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(key, f"{folder} is not writable ({exc.strerror or exc})", fix) from None
