"""A module's DistributedDataParallel replica, and the guard that keeps training forwards going through it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class Replica(DistributedDataParallel):
    """DistributedDataParallel that knows when it is running its module's forward."""

    def __init__(self, module: nn.Module, **kwargs: Any) -> None:
        super().__init__(module, **kwargs)
        self.in_forward = False

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        """The module's forward, registered with the gradient reducer."""
        self.in_forward = True
        try:
            return super().forward(*inputs, **kwargs)
        finally:
            self.in_forward = False


class RefuseDirectTrainingCall:
    """Forward pre-hook on a module that has a :class:`Replica`: a forward that records gradients must run
    through the replica, or this rank's gradients would never be averaged with the others'."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        if module.training and torch.is_grad_enabled() and not self.replica.in_forward:
            raise RuntimeError(
                f"{type(module).__name__} was called directly in a training step under data parallelism; "
                "call it through Method.replica(module) so that its gradients are averaged over the ranks"
            )
