"""Pad-crop and flip augmentation for whole batches of uint8 images, on any device.

The augmentation space is finite: a crop offset (dx, dy) in [0, 2*pad] and a flip bit per image,
so every augmented sample is named by (index, dx, dy, flip), which the soft-label cache uses.
"""

from __future__ import annotations

import torch

from meal.config.schema import Augment

#: the `data.augment` values of data sets held in memory (the schema's Augment lists every data set's)
AUGMENTATIONS = (Augment.none, Augment.flip, Augment.pad_crop, Augment.pad_crop_flip)


def sample_params(n: int, augment: str, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Draw (dx, dy, flip) for `n` images; without cropping dx = dy = pad (the centre)."""
    params = torch.full((n, 3), pad, dtype=torch.long)
    params[:, 2] = 0
    if augment in ("pad_crop", "pad_crop_flip"):
        params[:, :2] = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    if augment in ("flip", "pad_crop_flip"):
        params[:, 2] = torch.randint(0, 2, (n,), generator=generator)
    return params


def apply_params(images: torch.Tensor, params: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop each zero-padded image at (dx, dy) and flip it where asked, in one gather.

    images: (B, C, H, W) of any dtype; params: (B, 3) long (dx, dy, flip). Returns (B, C, H, W).
    """
    b, _, h, w = images.shape
    params = params.to(images.device)
    if pad > 0:
        images = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = params[:, 1:2] + torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device).expand(b, w)
    flip = params[:, 2:3].bool()
    cols = torch.where(flip, w - 1 - cols, cols) + params[:, 0:1]
    batch_index = torch.arange(b, device=images.device)[:, None, None]
    out = images[batch_index, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def reference_transform(image: torch.Tensor, dx: int, dy: int, flip: bool, pad: int) -> torch.Tensor:
    """Per-image reference of :func:`apply_params` (torchvision's pad, crop and flip on one tensor)."""
    import torchvision.transforms.v2.functional as F

    h, w = image.shape[-2:]
    padded = F.pad(image, [pad, pad, pad, pad], fill=0)
    cropped = F.crop(padded, dy, dx, h, w)
    return F.horizontal_flip(cropped) if flip else cropped


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float, scaled to [0, 1] then standardised per channel."""
    x = images.float().div_(255.0)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
