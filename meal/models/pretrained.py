"""Load a torchvision-format state-dict file into a network, with one-line errors.

Accepted files: a plain ``{name: tensor}`` dict, or one wrapped under ``"state_dict"`` or
``"model"``; key prefixes added by DistributedDataParallel (``module.``) or ``torch.compile``
(``_orig_mod.``) are removed. Every problem raises :class:`~meal.errors.CheckpointError` naming
the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meal.errors import CheckpointError

WRAPPER_KEYS = ("state_dict", "model")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")
SHOWN = 3


def _first_line(exc: BaseException) -> str:
    """The exception's first line, up to its first sentence end."""
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    return text.split(". ", 1)[0].rstrip(".")


def _shown(items: list[str]) -> str:
    more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _unwrap(obj: Any, file: Path) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        for wrapper in WRAPPER_KEYS:
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(key, str) for key in obj):
        raise CheckpointError(
            f"{file}: not a state dict (expected {{name: tensor}}, optionally under "
            f"{' or '.join(repr(key) for key in WRAPPER_KEYS)}); "
            "save one with torch.save(model.state_dict(), path)"
        )
    state = dict(obj)
    stripped = True
    while stripped:
        stripped = False
        for prefix in STRIPPED_PREFIXES:
            if all(key.startswith(prefix) for key in state):
                state = {key[len(prefix) :]: value for key, value in state.items()}
                stripped = True
    return state


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state-dict file (CPU tensors), unwrapped and without DDP/compile prefixes."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise CheckpointError(f"{file}: is a folder, not a weights file (give the path of the .pt/.pth file in it)")
    if not file.is_file():
        raise CheckpointError(f"{file}: no such file (check the path of the pretrained weights)")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{file}: cannot be read as a state dict ({_first_line(exc)}); the file may be truncated or "
            "corrupt, or hold a pickled model: re-export it with torch.save(model.state_dict(), path)"
        ) from exc
    return _unwrap(obj, file)


def load_pretrained(net: nn.Module, path: str | os.PathLike[str], arch: str, num_classes: int) -> None:
    """Load the weights in `path` into `net` (an `arch` network with `num_classes` outputs).

    Keys must match exactly (``num_batches_tracked`` may be absent) and every tensor must have the
    network's shape; otherwise a :class:`CheckpointError` names the file and the first mismatches.
    """
    file = Path(path).expanduser()
    state = read_state_dict(file)
    expected = net.state_dict()
    missing = [key for key in expected if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [
        f"{key} {tuple(state[key].shape)} in file vs {tuple(expected[key].shape)} in model"
        for key in expected
        if isinstance(state.get(key), torch.Tensor) and state[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_shown(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_shown(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatch {_shown(wrong_shape)}")
    if problems:
        raise CheckpointError(
            f"{file}: does not fit {arch} with {num_classes} classes: {'; '.join(problems)} "
            "(was it saved for another architecture or class count?)"
        )
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{file}: cannot be loaded into {arch}: {_first_line(exc)}") from exc
