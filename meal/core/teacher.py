"""A frozen teacher as the rest of meal sees it."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class Teacher:
    """A frozen teacher: display name, the model, and the checkpoint it came from."""

    name: str
    model: nn.Module
    checkpoint: str | None = None
    sha256: str | None = None
