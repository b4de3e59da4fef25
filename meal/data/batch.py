"""The batch every loader yields."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """Inputs, labels, dataset indices and the augmentation applied to each sample.

    `aug` holds one row per sample: (dx, dy, flip) crop offsets into the padded image and a
    horizontal-flip flag for the finite pad-crop-flip space, or None when the augmentation has no
    finite parameterisation (ImageFolder random-resized crops).
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    aug: torch.Tensor | None = None
