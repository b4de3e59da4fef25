"""What a soft-label cache holds and the key that names it.

Three layouts, chosen from the training loader:

``finite``
    In-memory tensor datasets (Fashion-MNIST, CIFAR, SVHN, synthetic) whose augmentation space is
    finite: a crop offset ``(dx, dy)`` in ``[0, 2*pad]`` and a flip bit. Every (sample,
    augmentation) pair is cached: ``slots = (2*pad+1)**2 * flips`` entries per sample (1 for
    ``augment=none``). Slot of ``(dx, dy, flip)``: ``(dy * (2*pad+1) + dx) * flips + flip``.
``crops``
    Image folders with random-resized-crop + flip training augmentation. Per image, ``cache_crops``
    crop boxes ``(top, left, h, w, flip)`` are drawn once (from a generator seeded by the image's
    index) and stored with the ensemble's targets; training replays one of them per image and epoch
    (the FKD scheme).
``fixed``
    Image folders without training augmentation (resize + centre crop): one entry per image.

The key is the SHA-256 of a canonical JSON document of everything that determines the cached
values: the format version, each teacher's architecture and checkpoint SHA-256 (in order), the
dataset's name and a fingerprint of its training images (tensor bytes, or the folder's relative
paths, labels and file sizes, in training order), the image shape, the augmentation (name, pad,
crop count and seed, scale and ratio ranges), the normalisation, the temperature of the stored
probabilities, the storage dtype and the top-k setting. Changing any of them gives a new key, so a
stale cache can never be read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from meal.config.choices import one_of
from meal.config.schema import CacheDtype
from meal.core.teacher import Teacher
from meal.data.imagefolder import RATIO, SCALE, FolderLoader
from meal.data.tensor_loader import TensorLoader
from meal.errors import ConfigError

FORMAT = "meal-softlabels/1"
CROP_SEED = 20201117
#: the torch type of each `method.cache_dtype`
DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in CacheDtype.values()}
CROP_AUGMENTS = ("pad_crop", "pad_crop_flip")
FLIP_AUGMENTS = ("flip", "pad_crop_flip")


@dataclass
class CacheSpec:
    """Shape and identity of one cache.

    Attributes:
        kind: ``finite``, ``crops`` or ``fixed`` (see the module docstring).
        num_samples: rows (training samples) in the cache.
        slots: entries per row (augmentations, or stored crops).
        num_classes: K.
        temperature: temperature of the stored probabilities.
        dtype: storage dtype name.
        topk: number of stored probabilities per entry (None: all, plus the mean logits).
        inputs: the keyed document.
        info: readable facts written to the manifest (not keyed).
        n_pos: crop offsets per axis (finite layout).
        n_flip: flip states (finite layout).
    """

    kind: str
    num_samples: int
    slots: int
    num_classes: int
    temperature: float
    dtype: str
    topk: int | None
    inputs: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    n_pos: int = 1
    n_flip: int = 1

    @property
    def key(self) -> str:
        """SHA-256 of the canonical JSON of :attr:`inputs`."""
        text = json.dumps(self.inputs, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def torch_dtype(self) -> torch.dtype:
        """The storage dtype."""
        return DTYPES[self.dtype]

    def slot_params(self) -> torch.Tensor:
        """(slots, 3) long: the (dx, dy, flip) of every slot of the finite layout."""
        a = torch.arange(self.slots)
        flip = a % self.n_flip
        pos = a // self.n_flip
        return torch.stack([pos % self.n_pos, pos // self.n_pos, flip], dim=1)

    def slot_of(self, aug: torch.Tensor) -> torch.Tensor:
        """Slot index of each (dx, dy, flip) row of the finite layout (inverse of :meth:`slot_params`)."""
        aug = aug.long()
        return (aug[:, 1] * self.n_pos + aug[:, 0]) * self.n_flip + aug[:, 2]


def teacher_fingerprint(teacher: Teacher) -> dict[str, str]:
    """Architecture and checkpoint SHA-256 of a teacher (a hash of its weights when it has no file)."""
    arch = str(getattr(teacher.model, "arch", type(teacher.model).__name__))
    digest = teacher.sha256
    if not digest:
        h = hashlib.sha256()
        for name, tensor in sorted(teacher.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digest = "weights:" + h.hexdigest()
    return {"arch": arch, "sha256": digest}


def tensor_fingerprint(images: torch.Tensor) -> str:
    """SHA-256 of a tensor's shape, dtype and bytes (the training images, in training order)."""
    array = images.detach().cpu().contiguous().numpy()
    h = hashlib.sha256(f"{tuple(array.shape)}|{array.dtype}|".encode())
    h.update(memoryview(array).cast("B"))
    return h.hexdigest()


def folder_fingerprint(loader: FolderLoader) -> str:
    """SHA-256 of the relative path, label and file size of every training image, in subset order."""
    folder = loader.dataset.folder
    root = str(folder.root)
    h = hashlib.sha256()
    for index in loader.subset.tolist():
        path, label = folder.samples[index]
        rel = path[len(root) :].lstrip("/") if path.startswith(root) else path
        try:
            size = os.path.getsize(path)
        except OSError:
            size = -1
        h.update(f"{rel}|{label}|{size}\n".encode())
    return h.hexdigest()


def _target_inputs(method_cfg: Any) -> tuple[float, str, int | None]:
    dtype = str(method_cfg.cache_dtype)
    one_of("method.cache_dtype", dtype, DTYPES)
    topk = method_cfg.cache_topk
    if topk is not None and int(topk) <= 0:
        raise ConfigError("method.cache_topk", f"must be positive or null, got {topk}")
    return float(method_cfg.temperature), dtype, None if topk is None else int(topk)


def cache_spec(
    teachers: list[Teacher], loader: TensorLoader | FolderLoader, data_cfg: Any, method_cfg: Any, num_classes: int
) -> CacheSpec:
    """The cache a method with `method_cfg` needs for training loader `loader` and these teachers."""
    if not teachers:
        raise ConfigError("teachers", "cached soft labels need at least one teacher")
    temperature, dtype, topk = _target_inputs(method_cfg)
    target = {
        "temperature": temperature,
        "dtype": dtype,
        "topk": topk,
        "stored": "mean_softmax+mean_logits" if topk is None or topk >= num_classes else "topk_mean_softmax",
    }
    common = {"format": FORMAT, "teachers": [teacher_fingerprint(t) for t in teachers], "target": target}
    info = {
        "dataset": data_cfg.name,
        "train_subset": data_cfg.train_subset,
        "val_split": data_cfg.val_split,
        "teachers": [t.name for t in teachers],
        "checkpoints": [t.checkpoint for t in teachers],
    }
    if isinstance(loader, TensorLoader):
        augment = loader.augment
        pad = loader.pad if augment in CROP_AUGMENTS else 0
        n_pos = 2 * pad + 1
        n_flip = 2 if augment in FLIP_AUGMENTS else 1
        _, c, h, w = loader.images.shape
        inputs = common | {
            "kind": "finite",
            "data": {
                "name": data_cfg.name,
                "fingerprint": tensor_fingerprint(loader.images),
                "num_samples": loader.num_samples,
                "shape": [c, h, w],
                "num_classes": num_classes,
            },
            "transform": {
                "augment": augment,
                "pad": pad,
                "normalize": bool(loader.normalize_inputs),
                "mean": [round(float(v), 8) for v in loader.mean.tolist()],
                "std": [round(float(v), 8) for v in loader.std.tolist()],
            },
        }
        return CacheSpec(
            "finite",
            loader.num_samples,
            n_pos * n_pos * n_flip,
            num_classes,
            temperature,
            dtype,
            topk,
            inputs,
            info,
            n_pos=n_pos,
            n_flip=n_flip,
        )
    dataset = loader.dataset
    kind = "crops" if dataset.train else "fixed"
    crops = int(method_cfg.cache_crops) if kind == "crops" else 1
    if crops <= 0:
        raise ConfigError("method.cache_crops", f"must be positive, got {crops}")
    transform: dict[str, Any] = {
        "image_size": dataset.image_size,
        "mean": [float(v) for v in data_cfg.mean],
        "std": [float(v) for v in data_cfg.std],
    }
    if kind == "crops":
        transform |= {
            "crops": crops,
            "seed": CROP_SEED,
            "scale": list(SCALE),
            "ratio": list(RATIO),
            "sampler": "random_resized_crop_flip/1",
        }
    else:
        transform |= {"resize": int(data_cfg.resize), "center_crop": True}
    inputs = common | {
        "kind": kind,
        "data": {
            "name": data_cfg.name,
            "fingerprint": folder_fingerprint(loader),
            "num_samples": loader.num_samples,
            "num_classes": num_classes,
        },
        "transform": transform,
    }
    return CacheSpec(kind, loader.num_samples, crops, num_classes, temperature, dtype, topk, inputs, info)
