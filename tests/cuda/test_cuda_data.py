"""CUDA data paths: a CPU-stored TensorLoader delivers its batches on the GPU (skipped without a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from meal.data import build_data
from meal.data.batch import to_device
from meal.data.tensor_loader import TensorLoader
from tests.conftest import compose_config

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA = torch.device("cuda")
MEAN = [0.5, 0.4, 0.3]
STD = [0.2, 0.25, 0.3]


def _loader(store: str, world_size: int = 1, rank: int = 0) -> TensorLoader:
    generator = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (50,), generator=generator)
    loader = TensorLoader(
        images,
        labels,
        batch_size=7,
        mean=MEAN,
        std=STD,
        augment="pad_crop_flip",
        pad=2,
        shuffle=True,
        seed=3,
        device=CUDA,
        store=store,
        rank=rank,
        world_size=world_size,
    )
    loader.set_epoch(2)
    return loader


@pytest.mark.parametrize(("world_size", "rank"), [(1, 0), (2, 1)])
def test_a_cpu_store_delivers_the_gpu_stores_batches_on_the_gpu(world_size: int, rank: int) -> None:
    on_cpu, on_gpu = _loader("cpu", world_size, rank), _loader("cuda", world_size, rank)
    assert on_cpu.images.device.type == "cpu" and on_gpu.images.device.type == "cuda"
    first, second = list(on_cpu), list(on_gpu)
    assert len(first) == len(second) == len(on_cpu) > 0
    for a, b in zip(first, second, strict=True):
        assert a.x.device.type == a.y.device.type == "cuda"
        assert a.index.device.type == a.aug.device.type == "cpu"
        assert torch.equal(a.index, b.index)
        assert torch.equal(a.aug, b.aug)
        assert torch.equal(a.y, b.y)
        torch.testing.assert_close(a.x, b.x, rtol=0, atol=1e-6)  # CPU vs GPU float division may differ by 1 ulp
    resumed = list(_loader("cpu", world_size, rank).iterate(3))
    assert all(torch.equal(a.x, b.x) for a, b in zip(resumed, first[3:], strict=True))


def test_build_data_with_on_device_false_delivers_on_the_gpu(tmp_path: Path) -> None:
    overrides = [
        "data=synthetic",
        "data.train_size=200",
        "data.test_size=60",
        "data.batch_size=16",
        "data.image_size=8",
        "data.on_device=false",
        "data.val_split=0.25",
    ]
    cfg = compose_config(overrides, tmp_path)
    bundle = build_data(cfg.data, tmp_path, seed=0, device=CUDA)
    for loader in (bundle.train, bundle.val, bundle.test):
        assert loader.images.device.type == "cpu"
        batch = next(iter(loader))
        assert batch.x.device.type == batch.y.device.type == "cuda"
        assert batch.index.device.type == "cpu"


def test_to_device_copies_through_pinned_memory_without_changing_values() -> None:
    t = torch.randperm(1000)
    on_gpu = to_device(t, CUDA)
    assert on_gpu.device.type == "cuda" and not t.is_pinned()
    torch.cuda.synchronize()
    assert torch.equal(on_gpu.cpu(), t)
    assert to_device(on_gpu, CUDA) is on_gpu
