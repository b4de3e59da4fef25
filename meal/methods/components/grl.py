"""Gradient reversal layer.

:func:`grad_reverse` is the identity in the forward pass and multiplies the
incoming gradient by ``-scale`` in the backward pass. Placed between the
student and a discriminator, one backward pass of the discriminator's loss
then trains the discriminator to separate student from teacher features while
pushing the student to make them indistinguishable (a true min-max).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class GradReverse(torch.autograd.Function):
    """Identity forward; backward returns ``-scale * grad``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        """Return ``x`` unchanged (as a new view) and remember ``scale``."""
        ctx.scale = float(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        """Reverse and scale the gradient; ``scale`` gets none."""
        return grad_output * (-ctx.scale), None


def grad_reverse(x: Tensor, scale: float = 1.0) -> Tensor:
    """Identity on ``x``; its gradient is multiplied by ``-scale`` on the way back.

    Args:
        x: any tensor.
        scale: factor of the reversed gradient (``>= 0``; ``0`` blocks it).

    Returns:
        A tensor equal to ``x``.
    """
    if scale < 0:
        raise ValueError(f"grad_reverse scale must be >= 0, got {scale}")
    return GradReverse.apply(x, scale)
