"""Compute the cache's chunks: the ensemble's targets for every stored (sample, augmentation).

Teachers run in eval mode, under inference mode without autocast, in the precision of their weights
(the training entry point builds a cache before it casts teachers to `trainer.teacher_precision`, so a
cache holds float32 teacher outputs), in batches of `batch_size` images, on the
device the teachers live on. The images go through the training loader's own transform code
(``TensorLoader.transform``, ``FolderDataset.render``), so a cached entry is the online target of
the same augmented sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from meal.data.imagefolder import FolderDataset, FolderLoader, sample_crop_box
from meal.data.tensor_loader import TensorLoader
from meal.softlabels.spec import CROP_SEED, CacheSpec
from meal.softlabels.store import ChunkFn
from meal.softlabels.targets import ensemble_targets, pack


def _device_of(models: Sequence[nn.Module]) -> torch.device:
    for model in models:
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _run(models: Sequence[nn.Module], x: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    for model in models:
        model.eval()
    targets = ensemble_targets(models, x, temperature)
    return targets.probs, targets.logits


def finite_chunks(models: Sequence[nn.Module], loader: TensorLoader, spec: CacheSpec, batch_size: int) -> ChunkFn:
    """Chunk function of the finite layout: rows [start, end) x every (dx, dy, flip) slot."""
    slot_params = spec.slot_params()
    device = _device_of(models)

    def compute(start: int, end: int) -> dict[str, Tensor]:
        n, slots, k = end - start, spec.slots, spec.num_classes
        rows = torch.arange(start, end).repeat_interleave(slots)
        params = slot_params.repeat(n, 1)
        probs = torch.empty(n * slots, k)
        logits = torch.empty(n * slots, k)
        for s in range(0, rows.numel(), batch_size):
            sl = slice(s, s + batch_size)
            images = loader.images[rows[sl].to(loader.images.device)]
            x = loader.transform(images, params[sl]).to(device)
            p, lg = _run(models, x, spec.temperature)
            probs[sl], logits[sl] = p.cpu(), lg.cpu()
        return pack(probs.view(n, slots, k), logits.view(n, slots, k), spec.torch_dtype, spec.topk)

    return compute


def crop_boxes(height: int, width: int, crops: int, index: int) -> Tensor:
    """The `crops` stored (top, left, h, w, flip) boxes of image `index` (a fixed function of both)."""
    generator = torch.Generator().manual_seed(CROP_SEED * 1_000_003 + index)
    boxes = []
    for _ in range(crops):
        top, left, h, w = sample_crop_box(height, width, generator)
        flip = int(torch.randint(0, 2, (1,), generator=generator))
        boxes.append([top, left, h, w, flip])
    return torch.tensor(boxes, dtype=torch.int32)


class _CropSet(Dataset):
    """Image `i` of a subset, rendered at each of its stored crop boxes: (C, 3, H, W) and (C, 5)."""

    def __init__(self, dataset: FolderDataset, indices: Tensor, crops: int, fixed: bool) -> None:
        self.dataset = dataset
        self.indices = indices
        self.crops = crops
        self.fixed = fixed

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        index = int(self.indices[i])
        if self.fixed:
            image = self.dataset.to_tensor(self.dataset.eval_resize(self._load(index)))
            return image.unsqueeze(0), torch.zeros(1, 5, dtype=torch.int32)
        image = self._load(index)
        boxes = crop_boxes(image.height, image.width, self.crops, index)
        crops = torch.stack([self.dataset.render(image, *[int(v) for v in box]) for box in boxes])
        return crops, boxes

    def _load(self, index: int) -> Any:
        """The PIL image of dataset index `index`."""
        path, _ = self.dataset.folder.samples[index]
        return self.dataset.folder.loader(path)


def folder_chunks(
    models: Sequence[nn.Module], loader: FolderLoader, spec: CacheSpec, batch_size: int, workers: int
) -> ChunkFn:
    """Chunk function of the crops/fixed layouts: rows [start, end) of the training subset."""
    device = _device_of(models)
    fixed = spec.kind == "fixed"
    per_batch = max(1, batch_size // spec.slots)

    def compute(start: int, end: int) -> dict[str, Tensor]:
        crop_set = _CropSet(loader.dataset, loader.subset[start:end], spec.slots, fixed)
        batches = DataLoader(crop_set, batch_size=per_batch, num_workers=workers, shuffle=False)
        probs, logits, boxes = [], [], []
        for crops, box in batches:
            b, c = crops.shape[:2]
            p, lg = _run(models, crops.flatten(0, 1).to(device), spec.temperature)
            probs.append(p.cpu().view(b, c, -1))
            logits.append(lg.cpu().view(b, c, -1))
            boxes.append(box)
        out = pack(torch.cat(probs), torch.cat(logits), spec.torch_dtype, spec.topk)
        if not fixed:
            out["boxes"] = torch.cat(boxes)
        return out

    return compute
