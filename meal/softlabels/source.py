"""Where a distillation method gets its soft targets: the teachers (online) or a cache.

:class:`SoftLabels` is what a method holds. In ``online`` mode it runs the teachers on each step's
input. In ``cached`` mode :meth:`SoftLabels.prepare` opens the cache for this run's teachers, data
and augmentation (building it first when it is missing or was interrupted), and each step gathers
the entries of the batch's (sample, augmentation) pairs in one indexing operation, so the teachers
never run during training.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from meal.config.choices import one_of
from meal.config.schema import SoftLabelSource
from meal.core.teacher import Teacher
from meal.data.batch import Batch, to_device
from meal.data.imagefolder import FolderLoader
from meal.data.tensor_loader import TensorLoader
from meal.errors import ConfigError, MealError
from meal.softlabels.build import finite_chunks, folder_chunks
from meal.softlabels.spec import CacheSpec, cache_spec
from meal.softlabels.store import CacheStore
from meal.softlabels.targets import OnlineSoftLabels, SoftTargets, unpack

log = logging.getLogger(__name__)

MODES = SoftLabelSource.values()


class CachedSoftLabels:
    """Cached targets of one training loader, gathered by (dataset index, augmentation slot)."""

    def __init__(
        self,
        spec: CacheSpec,
        tensors: dict[str, Tensor],
        device: torch.device,
        loader: TensorLoader | FolderLoader,
        path: Path | None = None,
        store_device: torch.device | None = None,
    ) -> None:
        self.spec = spec
        self.path = path
        self.device = torch.device(device)
        values = tensors["values"]
        if values.shape[0] != spec.num_samples or values.shape[1] != spec.slots:
            raise MealError(
                f"soft-label cache {path}: holds {tuple(values.shape[:2])} entries, "
                f"expected ({spec.num_samples}, {spec.slots}); delete it to rebuild"
            )
        # (rows * slots, ...) so one index_select gathers a batch
        store = self.device if store_device is None else torch.device(store_device)
        self.values = values.reshape(spec.num_samples * spec.slots, *values.shape[2:]).to(store)
        indices = tensors.get("indices")
        self.indices = None if indices is None else indices.reshape(spec.num_samples * spec.slots, -1).to(store)
        self.boxes = tensors.get("boxes")
        self.rows: Tensor | None = None
        if isinstance(loader, FolderLoader):
            rows = torch.full((len(loader.dataset),), -1, dtype=torch.long)
            rows[loader.subset] = torch.arange(loader.num_samples)
            self.rows = rows

    def flat_index(self, index: Tensor, aug: Tensor | None) -> Tensor:
        """Row * slots + slot of each sample of a batch (CPU, int64)."""
        index = index.cpu().long()
        if self.rows is not None:
            index = self.rows[index]
        if self.spec.kind == "finite":
            slot = self.spec.slot_of(aug.cpu()) if self.spec.slots > 1 else None
        elif self.spec.kind == "crops":
            if aug is None or aug.shape[1] < 6:
                raise MealError(
                    "cached soft labels: the batch carries no replayed crop slot "
                    "(the training dataset must replay the cache's crop boxes)"
                )
            slot = aug[:, 5].cpu().long()
        else:
            slot = None
        return index * self.spec.slots + slot if slot is not None else index * self.spec.slots

    def lookup(self, flat: Tensor) -> SoftTargets:
        """Targets of flat entries (see :meth:`flat_index`), float32 on the cache's device."""
        flat = to_device(flat, self.values.device)
        values = to_device(self.values.index_select(0, flat), self.device)
        indices = None if self.indices is None else to_device(self.indices.index_select(0, flat), self.device)
        return unpack(values, indices, self.spec.num_classes, self.spec.temperature)

    def targets(self, batch: Batch) -> SoftTargets:
        """Cached targets of a batch's (sample, augmentation) pairs."""
        return self.lookup(self.flat_index(batch.index, batch.aug))


def open_or_build(
    teachers: Sequence[Teacher],
    data: Any,
    data_cfg: Any,
    method_cfg: Any,
    cache_root: Path,
    device: torch.device | None = None,
    chunk_samples: int | None = None,
    build_batch: int | None = None,
) -> CachedSoftLabels:
    """Open the cache for this run, building (or finishing) it first when needed.

    Args:
        teachers: the frozen teachers (their checkpoint hashes enter the key).
        data: the run's :class:`~meal.data.DataBundle`; its training loader fixes the layout.
        data_cfg: the `data` config (name, subset, normalisation).
        method_cfg: the method config (temperature, cache_dtype, cache_topk, cache_crops).
        cache_root: directory holding one sub-directory per cache key.
        device: where the targets are returned (the student's device; default: the teachers'). Tensor
            datasets keep the whole cache there; image-folder caches stay memory-mapped on the CPU.
        chunk_samples: rows per resumable chunk (default: about 65k entries).
        build_batch: images per teacher forward pass while building (default: data.eval_batch_size).
    """
    loader = data.train
    spec = cache_spec(list(teachers), loader, data_cfg, method_cfg, int(data.num_classes))
    store = CacheStore(cache_root, spec)
    models = [t.model for t in teachers]
    mmap = not isinstance(loader, TensorLoader)  # in-memory datasets: read it whole
    tensors = store.open(mmap)
    if tensors is None:
        with store.lock():
            tensors = store.open(mmap, report=False)  # another process may have built it meanwhile
            if tensors is None:
                started = time.monotonic()
                batch = int(build_batch or data_cfg.eval_batch_size)
                if isinstance(loader, TensorLoader):
                    compute = finite_chunks(models, loader, spec, batch)
                else:
                    compute = folder_chunks(models, loader, spec, batch, int(data_cfg.workers))
                log.info(
                    "building soft-label cache %s: %d samples x %d slots, %d teachers",
                    store.dir,
                    spec.num_samples,
                    spec.slots,
                    len(models),
                )
                counts = store.build(compute, chunk_samples)
                log.info(
                    "soft-label cache %s built in %.1fs (%d chunks computed, %d reused)",
                    store.dir,
                    time.monotonic() - started,
                    counts["computed"],
                    counts["reused"],
                )
                tensors = store.open(mmap, report=False)
    if tensors is None:
        raise MealError(
            f"soft-label cache {store.dir}: {store.problem()} right after it was built (check the "
            f"disk it is on, then delete {store.dir} to build it again)"
        )
    if device is None:
        device = next((p.device for m in models for p in m.parameters()), torch.device("cpu"))
    store_device = None if isinstance(loader, TensorLoader) else torch.device("cpu")
    source = CachedSoftLabels(spec, tensors, device, loader, store.dir, store_device)
    if spec.kind == "crops":
        loader.dataset.set_replay(tensors["boxes"], source.rows)
    return source


def refuse_single_cache(root: Path, key: str) -> None:
    """Refuse a cache root that is itself one cache (a key folder): caches of other runs would nest in it."""
    manifest = root / CacheStore.MANIFEST
    if not manifest.is_file():
        return
    try:
        teachers = json.loads(manifest.read_text()).get("info", {}).get("teachers") or []
    except (OSError, ValueError, AttributeError):
        teachers = []
    built_for = f" (built for teachers: {', '.join(map(str, teachers))})" if teachers else ""
    raise ConfigError(
        key,
        f"{root} is one soft-label cache{built_for}, not a folder of caches",
        f"set {key} to the folder that holds it, {root.parent}: it keeps one cache per teacher set and data",
    )


class SoftLabels:
    """A method's soft-target provider (`method.soft_labels`: online | cached)."""

    def __init__(self, method_cfg: Any, teachers: Sequence[Teacher], temperature: float) -> None:
        mode = str(getattr(method_cfg, "soft_labels", "online"))
        one_of("method.soft_labels", mode, MODES)
        self.mode = mode
        self.method_cfg = method_cfg
        self.teachers = list(teachers)
        self.online = OnlineSoftLabels([t.model for t in teachers], temperature)
        self.cached: CachedSoftLabels | None = None

    def prepare(self, data: Any, cfg: Any, device: torch.device | None = None, **build: Any) -> None:
        """Open (or build) the cache in ``cached`` mode; nothing to do online.

        The cache lives under `method.cache_dir` when set, else `paths.cache_dir`.
        """
        if self.mode != "cached":
            return
        key = "method.cache_dir" if self.method_cfg.cache_dir else "paths.cache_dir"
        root = Path(self.method_cfg.cache_dir or cfg.paths.cache_dir).expanduser()
        refuse_single_cache(root, key)
        self.cached = open_or_build(self.teachers, data, cfg.data, self.method_cfg, root, device, **build)

    def targets(self, batch: Batch, x: Tensor) -> SoftTargets:
        """Targets for a batch whose (possibly re-mixed) input is `x` (used online only)."""
        if self.mode == "online":
            return self.online.targets(x)
        if self.cached is None:
            raise MealError(
                "method.soft_labels=cached: the cache was not opened (call method.prepare(data, cfg) before training)"
            )
        return self.cached.targets(batch)
