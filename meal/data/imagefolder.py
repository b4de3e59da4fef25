"""ImageFolder datasets (ImageNet layout: ROOT/train/<class>/*, ROOT/val/<class>/*) with a DataLoader.

Training crops are random-resized crops + flips whose parameters come from a generator seeded by
(seed, epoch, index), so an epoch replays exactly after a resume, and each batch carries the crop
boxes it used (i, j, h, w, flip). With :meth:`FolderDataset.set_replay` the dataset instead picks,
per image and epoch, one of a few stored boxes (the soft-label cache's crops) and appends the
chosen slot to the box: (i, j, h, w, flip, slot).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from meal.data.batch import Batch
from meal.data.tensor_loader import check_sharding, epoch_generator, steps_per_epoch
from meal.errors import ConfigError, DataError

SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)


def sample_crop_box(height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """A random-resized-crop box (top, left, h, w) as torchvision draws it, from `generator`."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * (SCALE[0] + (SCALE[1] - SCALE[0]) * torch.rand(1, generator=generator).item())
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(1, generator=generator).item())
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif in_ratio > RATIO[1]:
        h, w = height, round(height * RATIO[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def check_same_classes(
    root: Path, class_to_idx: dict[str, int], train_root: Path, train_class_to_idx: dict[str, int]
) -> None:
    """Refuse a split whose class folders differ from the training split's.

    torchvision numbers the class folders of each split in sorted order, so two splits share one
    class-to-index map exactly when they hold the same class folders; a split that lacks a class or
    has one more would label every image after it with the wrong index.
    """
    if class_to_idx == train_class_to_idx:
        return
    missing = sorted(set(train_class_to_idx) - set(class_to_idx))
    unknown = sorted(set(class_to_idx) - set(train_class_to_idx))
    problems = [
        f"lacks {len(missing)} class folder(s) of {train_root}: {_shown(missing)}" if missing else "",
        f"has {len(unknown)} class folder(s) that {train_root} lacks: {_shown(unknown)}" if unknown else "",
    ]
    raise ConfigError(
        "data.root",
        f"{root} " + " and ".join(p for p in problems if p) + "; its labels would not match the training split's",
        f"give {root} exactly the class folders of {train_root}",
    )


def _shown(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


class FolderDataset(Dataset):
    """torchvision ImageFolder that returns (image, label, index, crop box)."""

    def __init__(
        self,
        root: Path,
        train: bool,
        image_size: int,
        resize: int,
        mean: list[float],
        std: list[float],
        seed: int,
        classes_of: FolderDataset | None = None,
    ) -> None:
        """`classes_of`: the training split whose class-to-index map this split must share (see
        :func:`check_same_classes`); None for the training split itself."""
        from torchvision import datasets
        from torchvision.transforms import v2

        if not root.is_dir():
            raise DataError(
                f"data.root: image folder {root} does not exist (expected ROOT/train/<class>/*.jpg "
                "and ROOT/val/<class>/*.jpg)"
            )
        try:
            self.folder = datasets.ImageFolder(str(root))
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(f"data.root: {root} holds no class folders with images ({exc})") from exc
        if classes_of is not None:
            check_same_classes(
                root, self.folder.class_to_idx, Path(classes_of.folder.root), classes_of.folder.class_to_idx
            )
        self.train = train
        self.image_size = image_size
        self.seed = seed
        self.epoch = 0
        self.replay_boxes: torch.Tensor | None = None
        self.replay_rows: torch.Tensor | None = None
        self.to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
        self.eval_resize = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)])

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, torch.Tensor]:
        path, label = self.folder.samples[index]
        try:
            image = self.folder.loader(path)
        except OSError as exc:
            raise DataError(f"data.root: cannot read image {path} ({exc}); remove or replace the file") from exc
        if not self.train:
            return self.to_tensor(self.eval_resize(image)), label, index, torch.zeros(5, dtype=torch.long)
        generator = epoch_generator(self.seed + index * 7_777_777, self.epoch)
        if self.replay_boxes is not None and self.replay_rows is not None:
            boxes = self.replay_boxes[int(self.replay_rows[index])]
            slot = int(torch.randint(0, boxes.shape[0], (1,), generator=generator))
            box = [int(v) for v in boxes[slot]]
            return self.render(image, *box), label, index, torch.tensor([*box, slot])
        top, left, h, w = sample_crop_box(image.height, image.width, generator)
        flip = int(torch.randint(0, 2, (1,), generator=generator))
        return self.render(image, top, left, h, w, flip), label, index, torch.tensor([top, left, h, w, flip])

    def render(self, image: Any, top: int, left: int, h: int, w: int, flip: int) -> torch.Tensor:
        """Crop box (top, left, h, w) of a PIL image, resized to image_size, flipped if asked, normalised."""
        from torchvision.transforms.v2 import functional as F

        crop = F.resized_crop(image, top, left, h, w, [self.image_size, self.image_size], antialias=True)
        if flip:
            crop = F.horizontal_flip(crop)
        return self.to_tensor(crop)

    def set_replay(self, boxes: torch.Tensor | None, rows: torch.Tensor | None = None) -> None:
        """Replay stored crop boxes instead of drawing new ones (None switches back).

        boxes: (R, C, 5) (top, left, h, w, flip) per row; rows: (len(self),) row of each image index.
        """
        if boxes is not None and (rows is None or boxes.dim() != 3 or boxes.shape[2] != 5):
            raise ValueError("set_replay needs boxes of shape (R, C, 5) and a row for every image index")
        self.replay_boxes = None if boxes is None else boxes.cpu()
        self.replay_rows = None if boxes is None else rows.cpu()


class FolderLoader:
    """Shuffled, resumable batches over a :class:`FolderDataset` (pinned memory, non-blocking copies).

    `batch_size` is the global batch; with `world_size` > 1 each rank yields its
    ``tensor_split(world_size)[rank]`` slice of every global batch, and a final global batch holding
    fewer than `world_size` images (the last ``num_samples % batch_size`` of the epoch's order) is
    dropped, so all ranks yield ``len(self)`` non-empty batches. With one process the last batch is
    kept however small (``len = ceil(num_samples / batch_size)``).
    """

    def __init__(
        self,
        dataset: FolderDataset,
        *,
        batch_size: int,
        workers: int,
        shuffle: bool,
        seed: int,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        subset: torch.Tensor | None = None,
    ) -> None:
        check_sharding(batch_size, world_size)
        self.dataset = dataset
        self.batch_size = batch_size
        self.workers = workers
        self.shuffle = shuffle
        self.seed = seed
        self.device = torch.device(device)
        self.rank = rank
        self.world_size = world_size
        self.subset = subset if subset is not None else torch.arange(len(dataset))
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Images in the (sub)set, all ranks together."""
        return int(self.subset.numel())

    def __len__(self) -> int:
        """Steps per epoch, the same on every rank (see :func:`~meal.data.tensor_loader.steps_per_epoch`)."""
        return steps_per_epoch(self.num_samples, self.batch_size, self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and crops the next iteration replays."""
        self.epoch = epoch
        self.dataset.epoch = epoch

    def iterate(self, start_step: int = 0) -> Iterator[Batch]:
        """Yield the current epoch's batches from `start_step` on."""
        order = self.subset
        if self.shuffle:
            order = order[torch.randperm(order.numel(), generator=epoch_generator(self.seed, self.epoch))]
        order = order[start_step * self.batch_size : len(self) * self.batch_size]
        batches = [order[i : i + self.batch_size] for i in range(0, order.numel(), self.batch_size)]
        if self.world_size > 1:
            batches = [b.tensor_split(self.world_size)[self.rank] for b in batches]
        loader = DataLoader(
            self.dataset,
            batch_sampler=[b.tolist() for b in batches],
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for x, y, index, aug in loader:
            yield Batch(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True), index, aug)

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate(0)
