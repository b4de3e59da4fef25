"""The W&B run id of a run directory: created once, stored in ``<run_dir>/wandb_id``, reused on restart."""

from __future__ import annotations

import os
import re
import secrets
import string
from pathlib import Path

from meal.errors import MealError

ID_FILE = "wandb_id"
_ALPHABET = string.ascii_lowercase + string.digits
_VALID_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def new_run_id(length: int = 8) -> str:
    """A fresh random id in W&B's own style (lowercase letters and digits)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def load_or_create_run_id(run_dir: Path) -> str:
    """Return the id stored in ``<run_dir>/wandb_id``, creating and storing a new one if there is none.

    Raises:
        MealError: the file holds something that is not a W&B run id.
    """
    path = Path(run_dir) / ID_FILE
    if path.is_file():
        stored = path.read_text(encoding="utf-8").strip()
        if stored:
            if not _VALID_ID.fullmatch(stored):
                raise MealError(
                    f"{path}: holds {stored!r}, which is not a W&B run id (1-64 letters, digits, '_.-'); "
                    "fix it or delete the file to start a new W&B run"
                )
            return stored
    run_id = new_run_id()
    _write_atomic(path, run_id + "\n")
    return run_id


def read_run_id(run_dir: Path) -> str | None:
    """The id stored in ``<run_dir>/wandb_id``, or ``None`` if there is none."""
    path = Path(run_dir) / ID_FILE
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
