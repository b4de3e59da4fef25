"""Load the in-memory datasets as uint8 tensors (N, C, H, W) and int64 labels.

An explicit `data.root` is the only place looked at: data missing there is an error (or, with
`data.download=true`, downloaded there), never looked for elsewhere. Without `data.root` the dataset's
usual locations are searched (Fashion-MNIST: the Debian package, then ``<paths.data_dir>/fashion_mnist``;
the torchvision sets: ``<paths.data_dir>/<name>``), then, with `data.download` `auto` (the default) or
`true`, it is downloaded into ``<paths.data_dir>/<name>``; otherwise, or without a network, a one-line
error says how to get the data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from meal.data.idx import read_idx
from meal.errors import DataError

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class TensorSplits(NamedTuple):
    """Train and test images (uint8, N x C x H x W) with their labels (int64)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem, directory / "FashionMNIST" / "raw" / stem):
        if candidate.is_file():
            return candidate
    return None


def _fashion_dir(directory: Path) -> bool:
    return all(_find_idx(directory, stem) for stem in FASHION_FILES.values())


def download_fashion_mnist(target: Path) -> None:
    """Download Fashion-MNIST's four files into ``<target>/FashionMNIST/raw`` with torchvision."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(target), train=True, download=True)
    FashionMNIST(str(target), train=False, download=True)


def _read_fashion(directory: Path) -> TensorSplits:
    log.info("Fashion-MNIST from %s", directory)
    files = {k: _find_idx(directory, v) for k, v in FASHION_FILES.items()}
    return TensorSplits(
        read_idx(files["train_images"]).unsqueeze(1),
        read_idx(files["train_labels"]).long(),
        read_idx(files["test_images"]).unsqueeze(1),
        read_idx(files["test_labels"]).long(),
    )


def load_fashion_mnist(root: Path | None, default_root: Path, download: bool | str) -> TensorSplits:
    """Fashion-MNIST from `root` when given (only there), else the Debian package or `default_root`; or a download.

    `download`: True downloads into `root` (or `default_root`) when the data is missing there; ``"auto"``
    downloads into `default_root` only when `root` is unset and the data is found nowhere locally; False never.
    """
    candidates = [root] if root is not None else [DEBIAN_FASHION_MNIST, default_root]
    for directory in candidates:
        if _fashion_dir(directory):
            return _read_fashion(directory)
    if root is not None and download is not True:
        raise DataError(
            f"data.root: Fashion-MNIST not found in {root} (an explicit data.root is the only place looked at; "
            "put the four idx files there, fix the path, unset data.root to use the installed package "
            "(`apt-get install dataset-fashion-mnist`), or set data.download=true)"
        )
    searched = ", ".join(str(p) for p in candidates)
    if download is False:
        raise DataError(
            f"data.root: Fashion-MNIST not found in {searched} "
            "(install it with `apt-get install dataset-fashion-mnist`, point data.root at the four idx files, "
            "or set data.download=auto to download it)"
        )
    target = root or default_root
    log.warning("Fashion-MNIST not found in %s: downloading it into %s", searched, target)
    try:
        download_fashion_mnist(target)
    except (OSError, RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(
            f"data.root: Fashion-MNIST not found in {searched} and the download into {target} failed ({reason}) "
            "(without a network: install it with `apt-get install dataset-fashion-mnist`, or copy the four idx "
            "files to a folder and point data.root at it)"
        ) from exc
    if not _fashion_dir(target):
        raise DataError(
            f"data.root: the Fashion-MNIST download into {target} left incomplete files "
            "(delete the folder and start again, or point data.root at the four idx files)"
        )
    return _read_fashion(target)


def _torchvision_dataset(name: str, root: Path, train: bool, download: bool):
    from torchvision import datasets

    if name == "cifar10":
        return datasets.CIFAR10(str(root), train=train, download=download)
    if name == "cifar100":
        return datasets.CIFAR100(str(root), train=train, download=download)
    if name == "svhn":
        return datasets.SVHN(str(root), split="train" if train else "test", download=download)
    raise ValueError(f"no torchvision reader for dataset {name!r}: cifar10, cifar100 or svhn")


def _as_tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(dataset, "targets"):  # CIFAR: data is N x H x W x C
        images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
        labels = torch.as_tensor(dataset.targets, dtype=torch.long)
    else:  # SVHN: data is N x C x H x W
        images = torch.from_numpy(np.ascontiguousarray(dataset.data))
        labels = torch.as_tensor(dataset.labels, dtype=torch.long)
    return images, labels


def load_torchvision_set(name: str, root: Path, download: bool | str) -> TensorSplits:
    """CIFAR-10, CIFAR-100 or SVHN through torchvision's dataset classes, as tensors.

    `download`: True fetches missing files into `root`; ``"auto"`` reads `root` first and downloads into it
    only when the data is not there; False never downloads.
    """
    try:
        try:
            train = _torchvision_dataset(name, root, True, download is True)
            test = _torchvision_dataset(name, root, False, download is True)
        except RuntimeError:
            if download != "auto":
                raise
            log.warning("%s not found in %s: downloading it there", name, root)
            train = _torchvision_dataset(name, root, True, True)
            test = _torchvision_dataset(name, root, False, True)
    except RuntimeError as exc:
        raise DataError(
            f"data.root: {name} not found or incomplete in {root} ({exc}); put torchvision's {name} files "
            "there, point data.root at them, or set data.download=true on a machine with internet"
        ) from exc
    except OSError as exc:
        if download is False:
            raise DataError(f"data.root: cannot read {name} from {root} ({exc}); the files may be corrupt") from exc
        raise DataError(
            f"data.root: {name} not found in {root} and the download failed ({' '.join(str(exc).split())}) "
            f"(without a network: copy torchvision's {name} files to a folder and point data.root at it)"
        ) from exc
    except (ValueError, KeyError) as exc:
        raise DataError(f"data.root: cannot read {name} from {root} ({exc}); the files may be corrupt") from exc
    log.info("%s from %s", name, root)
    return TensorSplits(*_as_tensors(train), *_as_tensors(test))


def make_synthetic(
    train_size: int, test_size: int, channels: int, size: int, classes: int, seed: int = 0
) -> TensorSplits:
    """Random uint8 images with labels that depend on the image (so a model can learn them).

    The label is the class whose fixed random template the image most resembles, so accuracy well
    above chance is reachable; benchmarks only need the shapes.
    """
    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, channels, size, size, generator=generator)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, classes, (n,), generator=generator)
        noise = torch.rand(n, channels, size, size, generator=generator)
        images = (0.5 * templates[labels] + 0.5 * noise).mul(255).round().to(torch.uint8)
        return images, labels

    return TensorSplits(*draw(train_size), *draw(test_size))
