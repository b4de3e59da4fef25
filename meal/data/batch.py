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


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`, copied without making the host wait for the device.

    A copy from ordinary (pageable) host memory to a GPU first waits for all work queued on the GPU;
    from pinned memory it is queued like a kernel. CPU targets and tensors already there are returned
    as they are.
    """
    if tensor.device == device or device.type != "cuda":
        return tensor.to(device)
    if tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
