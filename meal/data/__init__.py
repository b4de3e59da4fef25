"""Datasets and loaders (`data=` group): build_data turns a data config into train/val/test loaders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from meal.data.batch import Batch
from meal.data.imagefolder import FolderDataset, FolderLoader
from meal.data.registry import DatasetSpec, dataset_names, dataset_spec, register_dataset
from meal.data.tensor_loader import TensorLoader
from meal.errors import ConfigError

__all__ = [
    "Batch",
    "DataBundle",
    "DatasetSpec",
    "Loader",
    "build_data",
    "check_data_config",
    "dataset_names",
    "dataset_spec",
    "register_dataset",
]

Loader = TensorLoader | FolderLoader
SUBSET_SEED = 20190127


@dataclass
class DataBundle:
    """Loaders and the shape facts models are built from."""

    name: str
    train: Loader
    test: Loader
    val: Loader | None
    num_classes: int
    in_channels: int
    image_size: int


def check_data_config(cfg: Any) -> None:
    """Check a data config before any file is read: a registered `data.name`, an augmentation it offers,
    one mean/std value per channel; raise ConfigError naming the key."""
    spec = dataset_spec(cfg.name)
    for key in ("batch_size", "eval_batch_size", "num_classes", "in_channels", "image_size"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"data.{key}", f"must be positive, got {getattr(cfg, key)}")
    if cfg.train_subset is not None and cfg.train_subset <= 0:
        raise ConfigError("data.train_subset", f"must be positive or null, got {cfg.train_subset}")
    if not (cfg.download is True or cfg.download is False or cfg.download == "auto"):
        raise ConfigError("data.download", f"must be auto, true or false, got {cfg.download!r}")
    if not 0.0 <= cfg.val_split < 1.0:
        raise ConfigError("data.val_split", f"must be in [0, 1), got {cfg.val_split}")
    if cfg.augment not in spec.augmentations:
        raise ConfigError(
            "data.augment",
            f"'{cfg.augment}' is not available for {cfg.name}",
            f"choose one of: {', '.join(spec.augmentations)}",
        )
    if len(cfg.mean) != cfg.in_channels or len(cfg.std) != cfg.in_channels:
        raise ConfigError("data.mean", f"mean/std need {cfg.in_channels} values (one per channel)")


def _check_world(cfg: Any, world_size: int) -> None:
    """Every rank needs at least one sample of each global training batch."""
    if world_size > 1 and cfg.batch_size < world_size:
        raise ConfigError(
            "data.batch_size",
            f"the global batch ({cfg.batch_size}) is smaller than the {world_size} processes sharing it",
            f"use data.batch_size >= {world_size}",
        )


def _check_steps(train: Loader, world_size: int) -> None:
    """Refuse a sharded training set too small for one step (its short last batch is dropped)."""
    if world_size > 1 and len(train) == 0:
        raise ConfigError(
            "data.train_subset",
            f"{train.num_samples} training images give no step to share across {world_size} processes",
            "use more training images or fewer processes",
        )


def _split(n: int, cfg: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A fixed (run-seed independent) subset of the training set and an optional validation part."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SUBSET_SEED))
    if cfg.train_subset is not None:
        order = order[: min(cfg.train_subset, n)]
    n_val = round(cfg.val_split * order.numel())
    if n_val == 0:
        return order.sort().values, None
    return order[n_val:].sort().values, order[:n_val].sort().values


def _check_shape(cfg: Any, images: torch.Tensor, labels: torch.Tensor) -> None:
    _, c, h, _ = images.shape
    if c != cfg.in_channels or h != cfg.image_size:
        raise ConfigError(
            "data.in_channels",
            f"{cfg.name} images are {c}x{h}x{h}, config says {cfg.in_channels}x{cfg.image_size}x{cfg.image_size}",
        )
    classes = int(labels.max()) + 1
    if classes > cfg.num_classes:
        raise ConfigError("data.num_classes", f"{cfg.name} has {classes} classes, config says {cfg.num_classes}")


def build_data(
    cfg: Any, data_dir: Path, seed: int, device: torch.device, rank: int = 0, world_size: int = 1
) -> DataBundle:
    """Load the dataset named by `cfg.name` and return its loaders.

    `data.batch_size` is the global batch: with `world_size` processes each takes its slice, and a
    final global batch of fewer than `world_size` training samples is dropped. Tensor datasets are
    stored on `device` when `data.on_device`, else on the CPU (batches still arrive on `device`).
    """
    check_data_config(cfg)
    _check_world(cfg, world_size)
    spec = dataset_spec(cfg.name)
    if spec.load is None:
        bundle = _build_folder(cfg, data_dir, seed, device, rank, world_size)
        _check_steps(bundle.train, world_size)
        return bundle
    splits = spec.load(cfg, data_dir / cfg.name)
    _check_shape(cfg, splits.train_x, splits.train_y)
    train_idx, val_idx = _split(splits.train_x.shape[0], cfg)
    store = device if cfg.on_device else torch.device("cpu")

    def loader(images: torch.Tensor, labels: torch.Tensor, train: bool) -> TensorLoader:
        return TensorLoader(
            images,
            labels,
            batch_size=cfg.batch_size if train else cfg.eval_batch_size,
            mean=list(cfg.mean),
            std=list(cfg.std),
            normalize_inputs=cfg.normalize,
            augment=cfg.augment if train else "none",
            pad=cfg.pad,
            shuffle=train,
            seed=seed,
            device=device,
            store=store,
            rank=rank if train else 0,
            world_size=world_size if train else 1,
        )

    test_x, test_y = splits.test_x, splits.test_y
    if cfg.test_subset is not None:
        test_x, test_y = test_x[: cfg.test_subset], test_y[: cfg.test_subset]
    train = loader(splits.train_x[train_idx], splits.train_y[train_idx], True)
    _check_steps(train, world_size)
    val = None if val_idx is None else loader(splits.train_x[val_idx], splits.train_y[val_idx], False)
    return DataBundle(
        cfg.name, train, loader(test_x, test_y, False), val, cfg.num_classes, cfg.in_channels, cfg.image_size
    )


def _build_folder(cfg: Any, data_dir: Path, seed: int, device: torch.device, rank: int, world_size: int) -> DataBundle:
    root = Path(cfg.root).expanduser() if cfg.root else data_dir / cfg.name
    common = {
        "image_size": cfg.image_size,
        "resize": cfg.resize,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "seed": seed,
    }
    train_set = FolderDataset(root / "train", train=cfg.augment != "none", **common)
    test_set = FolderDataset(root / "val", train=False, classes_of=train_set, **common)
    if len(train_set.folder.classes) > cfg.num_classes:
        raise ConfigError(
            "data.num_classes",
            f"{root / 'train'} has {len(train_set.folder.classes)} classes, config says {cfg.num_classes}",
        )
    train_idx, val_idx = _split(len(train_set), cfg)
    train = FolderLoader(
        train_set,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        shuffle=True,
        seed=seed,
        device=device,
        rank=rank,
        world_size=world_size,
        subset=train_idx,
    )
    test_subset = None if cfg.test_subset is None else torch.arange(min(cfg.test_subset, len(test_set)))
    test = FolderLoader(
        test_set,
        batch_size=cfg.eval_batch_size,
        workers=cfg.workers,
        shuffle=False,
        seed=seed,
        device=device,
        subset=test_subset,
    )
    val = None
    if val_idx is not None:
        val_set = FolderDataset(root / "train", train=False, classes_of=train_set, **common)
        val = FolderLoader(
            val_set,
            batch_size=cfg.eval_batch_size,
            workers=cfg.workers,
            shuffle=False,
            seed=seed,
            device=device,
            subset=val_idx,
        )
    return DataBundle(cfg.name, train, test, val, cfg.num_classes, cfg.in_channels, cfg.image_size)
