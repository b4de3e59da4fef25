"""Checkpoints written atomically and loaded only when whole.

A checkpoint is written to a temporary file in the same directory, flushed to disk and renamed over
the old one, so a crash, kill or full disk mid-write leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from meal.core.io import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text
from meal.errors import CheckpointError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_sha256",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]


def save_checkpoint(path: Path, state: dict[str, Any]) -> str:
    """Serialise `state` with torch.save, write it atomically, and return its SHA-256.

    A failed write (full disk, quota, permissions) raises a :class:`CheckpointError`; the previous
    file at `path` is left as it was.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        kept = f"the previous {path.name} is kept" if path.is_file() else f"no {path.name} was written"
        raise CheckpointError(
            f"{path}: cannot write the checkpoint ({exc.strerror or exc}); {kept} (free disk space or fix the "
            "folder's permissions, then start the run again in the same directory to resume from it)"
        ) from exc
    return hashlib.sha256(data).hexdigest()


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a kill cut short in `directory`; return them.

    Call only while no other process writes into `directory` (at the start of a run).
    """
    if not directory.is_dir():
        return []
    stale = sorted(directory.glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint, refusing (never half-reading) a truncated or corrupt file.

    torch.save writes a zip archive whose directory sits at the end of the file, so any truncation
    makes it unreadable; that and every other read failure becomes a one-line CheckpointError.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path}: checkpoint is corrupt or truncated ({size} bytes; {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); move it away to start from scratch"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a meal checkpoint (holds a {type(state).__name__}, not a dict)")
    return state
