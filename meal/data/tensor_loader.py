"""Batches from image tensors held in memory (on the CPU or the GPU), augmented per batch.

Each epoch's order and augmentation parameters are drawn up front from a generator seeded by
(seed, epoch), so an epoch can be entered at any step and replays exactly: a resumed run sees the
same batches as an uninterrupted one. Under data parallelism every rank draws the same global
batch and keeps its own slice of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from meal.data.augment import apply_params, normalize, sample_params
from meal.data.batch import Batch


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, epoch)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + 17)


class TensorLoader:
    """Iterate (optionally shuffled and augmented) batches over uint8 images and labels."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: list[float],
        std: list[float],
        normalize_inputs: bool = True,
        augment: str = "none",
        pad: int = 4,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.augment = augment
        self.pad = pad if augment in ("pad_crop", "pad_crop_flip") else 0
        self.shuffle = shuffle
        self.seed = seed
        self.normalize_inputs = normalize_inputs
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Images in the dataset (all ranks together)."""
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentations the next iteration replays."""
        self.epoch = epoch

    def plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's sample order (N,) and augmentation parameters (N, 3), on the CPU."""
        generator = epoch_generator(self.seed, epoch)
        n = self.num_samples
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        params = sample_params(n, self.augment, self.pad, generator)
        return order, params

    def transform(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Augment and normalise a uint8 batch with the given parameters."""
        if self.augment != "none":
            images = apply_params(images, params, self.pad)
        if not self.normalize_inputs:
            return images.float().div_(255.0)
        return normalize(images, self.mean, self.std)

    def iterate(self, start_step: int = 0) -> Iterator[Batch]:
        """Yield the batches of the current epoch, starting at `start_step`."""
        order, params = self.plan(self.epoch)
        for step in range(start_step, len(self)):
            sl = slice(step * self.batch_size, (step + 1) * self.batch_size)
            index, aug = order[sl], params[sl]
            if self.world_size > 1:
                index = index.tensor_split(self.world_size)[self.rank]
                aug = aug.tensor_split(self.world_size)[self.rank]
            dev_index = index.to(self.device, non_blocking=True)
            x = self.transform(self.images[dev_index], aug)
            yield Batch(x, self.labels[dev_index], index, aug)

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate(0)
