"""Batches from image tensors held in memory (on the CPU or the GPU), augmented per batch.

Each epoch's order and augmentation parameters are drawn up front from a generator seeded by
(seed, epoch), so an epoch can be entered at any step and replays exactly: a resumed run sees the
same batches as an uninterrupted one. Under data parallelism every rank draws the same global
batch and keeps its own slice of it; a final global batch too small to give every rank a sample is
dropped (see :func:`steps_per_epoch`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from meal.data.augment import apply_params, normalize, sample_params
from meal.data.batch import Batch, to_device


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, epoch)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + 17)


def check_sharding(batch_size: int, world_size: int) -> None:
    """Refuse a global batch that cannot give each of `world_size` ranks at least one sample."""
    if world_size > 1 and batch_size < world_size:
        raise ValueError(
            f"a global batch of {batch_size} cannot be split across {world_size} ranks "
            "(every rank needs at least one sample per step)"
        )


def steps_per_epoch(num_samples: int, batch_size: int, world_size: int = 1) -> int:
    """Global batches in an epoch, the same for every rank.

    ceil(num_samples / batch_size), except that under data parallelism (world_size > 1) a final
    partial batch of fewer than `world_size` samples is dropped, so that each rank's slice of every
    step holds at least one sample.
    """
    full, tail = divmod(num_samples, batch_size)
    return full + int(tail >= max(world_size, 1))


class TensorLoader:
    """Iterate (optionally shuffled and augmented) batches over uint8 images and labels.

    `batch_size` is the global batch; with `world_size` > 1 each rank yields its
    ``tensor_split(world_size)[rank]`` slice of every global batch, and a final global batch holding
    fewer than `world_size` samples (the last ``num_samples % batch_size`` of the epoch's order) is
    dropped, so all ranks yield ``len(self)`` non-empty batches. With one process the last batch is
    kept however small (``len = ceil(num_samples / batch_size)``).

    `store` is where the images live, `device` where batches are delivered (default: the store is
    the device). With a CPU store and a CUDA device, batches are gathered, augmented and normalised
    on the CPU, pinned, and copied to the device without blocking. ``Batch.index`` and ``Batch.aug``
    stay on the CPU.
    """

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
        store: torch.device | str | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        check_sharding(batch_size, world_size)
        self.device = torch.device(device)
        self.store = self.device if store is None else torch.device(store)
        self.images = images.to(self.store)
        self.labels = labels.to(self.store)
        self.batch_size = batch_size
        self.augment = augment
        self.pad = pad if augment in ("pad_crop", "pad_crop_flip") else 0
        self.shuffle = shuffle
        self.seed = seed
        self.normalize_inputs = normalize_inputs
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.store)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.store)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Images in the dataset (all ranks together)."""
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        """Steps per epoch, the same on every rank (see :func:`steps_per_epoch`)."""
        return steps_per_epoch(self.num_samples, self.batch_size, self.world_size)

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
        """Augment and normalise a uint8 batch (on the store) with the given parameters."""
        if self.augment != "none":
            images = apply_params(images, params, self.pad)
        if not self.normalize_inputs:
            return images.float().div_(255.0)
        return normalize(images, self.mean, self.std)

    def iterate(self, start_step: int = 0) -> Iterator[Batch]:
        """Yield the batches of the current epoch, starting at `start_step`.

        The epoch's order and parameters are copied to the store once, so that a GPU store needs no
        host-to-device copy (and no wait for the device) per batch; ``Batch.index``/``aug`` stay on the CPU.
        """
        order, params = self.plan(self.epoch)
        store_order, store_params = order.to(self.store), params.to(self.store)
        for step in range(start_step, len(self)):
            sl = slice(step * self.batch_size, (step + 1) * self.batch_size)
            parts = [order[sl], params[sl], store_order[sl], store_params[sl]]
            if self.world_size > 1:
                parts = [p.tensor_split(self.world_size)[self.rank] for p in parts]
            index, aug, store_index, store_aug = parts
            x = self.transform(self.images[store_index], store_aug)
            yield Batch(self.deliver(x), self.deliver(self.labels[store_index]), index, aug)

    def deliver(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move a tensor from the store to the compute device (through pinned memory from a CPU store)."""
        return tensor if self.store == self.device else to_device(tensor, self.device)

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate(0)
