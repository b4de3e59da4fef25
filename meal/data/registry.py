"""The dataset registry: every `data.name`, what kind of files it reads and how it loads.

A dataset is registered once with :func:`register_dataset`; :mod:`meal.data` builds loaders from the
registry, and validation refuses an unknown name (naming `data.name` and the choices) before any work.
The built-in sets are registered at the end of this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meal.config.schema import Augment
from meal.data.augment import AUGMENTATIONS
from meal.data.sources import TensorSplits, load_fashion_mnist, load_torchvision_set, make_synthetic
from meal.errors import ConfigError

#: augmentations of datasets read from image folders (decoded per batch)
FOLDER_AUGMENTATIONS = (Augment.none, Augment.random_resized_crop_flip)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset.

    `layout` is ``tensor`` (the whole set decoded into memory by `load`, which gets the data config and the
    default folder ``<paths.data_dir>/<name>`` and returns the train and test splits) or ``folder`` (an
    ImageFolder tree with ``train/`` and ``val/``, read per batch; `load` is None). `augmentations` are the
    `data.augment` values it accepts.
    """

    name: str
    layout: str
    load: Callable[[Any, Path], TensorSplits] | None
    augmentations: tuple[str, ...]
    description: str


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add `spec` to the registry (a name registered twice with another spec is an error)."""
    if spec.layout not in ("tensor", "folder"):
        raise ValueError(f"dataset {spec.name!r}: layout must be 'tensor' or 'folder', not {spec.layout!r}")
    if (spec.layout == "tensor") != (spec.load is not None):
        raise ValueError(f"dataset {spec.name!r}: a tensor dataset needs `load`, a folder dataset has none")
    if spec.name in _DATASETS and _DATASETS[spec.name] != spec:
        raise ValueError(f"dataset {spec.name!r} is registered twice")
    _DATASETS[spec.name] = spec
    return spec


def dataset_names() -> tuple[str, ...]:
    """The registered datasets' names, in registration order."""
    return tuple(_DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """The dataset registered as `name` (ConfigError naming data.name when there is none)."""
    if name not in _DATASETS:
        raise ConfigError("data.name", f"unknown dataset '{name}'", f"choose one of: {', '.join(_DATASETS)}")
    return _DATASETS[name]


def _root(cfg: Any) -> Path | None:
    return Path(cfg.root).expanduser() if cfg.root else None


def _download(cfg: Any) -> bool | str:
    """`data.download` as the loaders take it: ``auto`` never downloads into a user-given `data.root`."""
    return cfg.download if _root(cfg) is None else cfg.download is True


def _torchvision(name: str) -> Callable[[Any, Path], TensorSplits]:
    return lambda cfg, folder: load_torchvision_set(name, _root(cfg) or folder, _download(cfg))


for _spec in (
    DatasetSpec(
        "fashion_mnist",
        "tensor",
        lambda cfg, folder: load_fashion_mnist(_root(cfg), folder, _download(cfg)),
        AUGMENTATIONS,
        "Fashion-MNIST, 28x28 grey, 10 classes (idx files)",
    ),
    DatasetSpec("cifar10", "tensor", _torchvision("cifar10"), AUGMENTATIONS, "CIFAR-10 (torchvision's files)"),
    DatasetSpec("cifar100", "tensor", _torchvision("cifar100"), AUGMENTATIONS, "CIFAR-100 (torchvision's files)"),
    DatasetSpec("svhn", "tensor", _torchvision("svhn"), AUGMENTATIONS, "SVHN (torchvision's .mat files)"),
    DatasetSpec("imagenet", "folder", None, FOLDER_AUGMENTATIONS, "ImageNet as an ImageFolder tree"),
    DatasetSpec("imagefolder", "folder", None, FOLDER_AUGMENTATIONS, "any ImageFolder tree (train/, val/)"),
    DatasetSpec(
        "synthetic",
        "tensor",
        lambda cfg, folder: make_synthetic(
            cfg.train_size, cfg.test_size, cfg.in_channels, cfg.image_size, cfg.num_classes
        ),
        AUGMENTATIONS,
        "random images whose label depends on the image (tests, benchmarks)",
    ),
):
    register_dataset(_spec)
