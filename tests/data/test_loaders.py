"""TensorLoader order, resume and sharding; build_data splits and config checks."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from meal.config import register
from meal.data import build_data
from meal.data.augment import apply_params, normalize
from meal.data.batch import to_device
from meal.data.sources import make_synthetic
from meal.data.tensor_loader import TensorLoader, steps_per_epoch
from meal.errors import ConfigError

CPU = torch.device("cpu")
CONF = Path(__file__).resolve().parents[2] / "conf"
MEAN = [0.5, 0.4, 0.3]
STD = [0.2, 0.25, 0.3]


def _data(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return images, labels


def _loader(
    batch_size: int = 8,
    seed: int = 0,
    augment: str = "pad_crop_flip",
    shuffle: bool = True,
    rank: int = 0,
    world_size: int = 1,
    n: int = 50,
) -> TensorLoader:
    images, labels = _data(n)
    return TensorLoader(
        images,
        labels,
        batch_size=batch_size,
        mean=MEAN,
        std=STD,
        augment=augment,
        pad=2,
        shuffle=shuffle,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )


def _assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for first, second in zip(a, b, strict=True):
        assert torch.equal(first.index, second.index)
        assert torch.equal(first.y, second.y)
        assert torch.equal(first.aug, second.aug)
        assert torch.equal(first.x, second.x)


def test_same_seed_and_epoch_replay_identical_batches() -> None:
    first, second = _loader(), _loader()
    first.set_epoch(3)
    second.set_epoch(3)
    _assert_same_batches(list(first), list(second))
    _assert_same_batches(list(first), list(first))  # iterating again replays the epoch


def test_epochs_and_seeds_change_the_order_and_augmentation() -> None:
    loader = _loader()
    loader.set_epoch(0)
    epoch0 = torch.cat([b.index for b in loader])
    aug0 = torch.cat([b.aug for b in loader])
    loader.set_epoch(1)
    epoch1 = torch.cat([b.index for b in loader])
    aug1 = torch.cat([b.aug for b in loader])
    assert not torch.equal(epoch0, epoch1)
    assert not torch.equal(aug0, aug1)
    other_seed = torch.cat([b.index for b in _loader(seed=1)])
    assert not torch.equal(epoch0, other_seed)


@pytest.mark.parametrize("start", [0, 1, 3, 6, 7])
def test_iterate_from_a_step_yields_the_tail_of_the_epoch(start: int) -> None:
    loader = _loader()
    loader.set_epoch(2)
    full = list(loader.iterate())
    resumed = _loader()
    resumed.set_epoch(2)
    _assert_same_batches(list(resumed.iterate(start_step=start)), full[start:])


SHARDINGS = [
    (50, 7, 2),
    (50, 8, 2),
    (50, 50, 2),
    (49, 8, 2),
    (50, 8, 3),
    (50, 8, 4),
    (50, 12, 4),
    (9, 4, 2),
    (3, 8, 2),
    (1, 8, 2),
]


@pytest.mark.parametrize(("n", "batch_size", "world_size"), SHARDINGS)
def test_ranks_split_the_global_batch_and_drop_a_tail_too_small_to_share(
    n: int, batch_size: int, world_size: int
) -> None:
    single = _loader(batch_size=batch_size, n=n)
    ranks = [_loader(batch_size=batch_size, rank=r, world_size=world_size, n=n) for r in range(world_size)]
    for loader in (single, *ranks):
        loader.set_epoch(1)
    batches = list(single)
    per_rank = [list(loader) for loader in ranks]
    tail = n % batch_size
    dropped = 0 < tail < world_size
    steps = len(batches) - int(dropped)
    assert len(single) == len(batches) == math.ceil(n / batch_size)  # one process keeps its short tail
    assert [len(loader) for loader in ranks] == [len(parts) for parts in per_rank] == [steps] * world_size
    assert all(
        b.index.numel() >= 1 and b.x.shape[0] == b.y.shape[0] == b.aug.shape[0] == b.index.numel()
        for parts in per_rank
        for b in parts
    ), "no rank yields an empty batch"
    for step in range(steps):
        parts = [shard[step] for shard in per_rank]
        sizes = [p.index.numel() for p in parts]
        assert max(sizes) - min(sizes) <= 1
        for field in ("x", "y", "index", "aug"):
            joined = torch.cat([getattr(p, field) for p in parts])
            assert torch.equal(joined, getattr(batches[step], field)), f"step {step}: {field} differs"
    order, _ = single.plan(1)
    union = torch.cat([p.index for parts in per_rank for p in parts] or [torch.empty(0, dtype=torch.long)])
    kept = n - tail if dropped else n
    assert sorted(union.tolist()) == sorted(order[:kept].tolist())  # each kept index once, on one rank
    if dropped:
        assert torch.equal(batches[-1].index, order[n - tail :])  # the dropped batch is the order's last n % bs
        assert not set(order[n - tail :].tolist()) & set(union.tolist())


@pytest.mark.parametrize(("n", "batch_size", "world_size"), [(50, 7, 2), (50, 8, 3), (9, 4, 2)])
def test_each_rank_resumes_at_any_step(n: int, batch_size: int, world_size: int) -> None:
    for rank in range(world_size):
        loader = _loader(batch_size=batch_size, rank=rank, world_size=world_size, n=n)
        loader.set_epoch(2)
        full = list(loader.iterate())
        for start in range(len(loader) + 1):
            resumed = _loader(batch_size=batch_size, rank=rank, world_size=world_size, n=n)
            resumed.set_epoch(2)
            _assert_same_batches(list(resumed.iterate(start_step=start)), full[start:])


@pytest.mark.parametrize(
    ("n", "batch_size", "world_size", "steps"),
    [
        (50, 8, 1, 7),
        (49, 8, 1, 7),
        (1, 8, 1, 1),
        (48, 8, 2, 6),
        (49, 8, 2, 6),
        (50, 8, 2, 7),
        (50, 8, 3, 6),
        (51, 8, 3, 7),
        (2, 8, 3, 0),
        (5, 5, 5, 1),
    ],
)
def test_steps_per_epoch(n: int, batch_size: int, world_size: int, steps: int) -> None:
    assert steps_per_epoch(n, batch_size, world_size) == steps


def test_a_global_batch_smaller_than_the_world_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be split across 3 ranks"):
        _loader(batch_size=2, world_size=3)
    _loader(batch_size=3, world_size=3)


@pytest.mark.parametrize(("n", "batch_size"), [(50, 8), (48, 8), (5, 8), (1, 1)])
def test_len_is_ceil_and_an_epoch_covers_every_index_once(n: int, batch_size: int) -> None:
    loader = _loader(batch_size=batch_size, n=n)
    batches = list(loader)
    assert len(loader) == math.ceil(n / batch_size) == len(batches)
    assert [b.index.numel() for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    seen = torch.cat([b.index for b in batches])
    assert sorted(seen.tolist()) == list(range(n))
    assert loader.num_samples == n


def test_unshuffled_loader_keeps_dataset_order() -> None:
    loader = _loader(shuffle=False, augment="none")
    assert torch.cat([b.index for b in loader]).tolist() == list(range(50))


@pytest.mark.parametrize("augment", ["none", "flip", "pad_crop", "pad_crop_flip"])
def test_batches_are_the_indexed_images_transformed_with_the_reported_params(augment: str) -> None:
    images, labels = _data()
    loader = _loader(augment=augment)
    pad = 2 if "crop" in augment else 0
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    for batch in loader:
        assert batch.x.dtype == torch.float32
        assert batch.x.shape == (batch.index.numel(), 3, 8, 8)
        assert torch.equal(batch.y, labels[batch.index])
        expected = images[batch.index]
        if augment != "none":
            expected = apply_params(expected, batch.aug, pad)
        torch.testing.assert_close(batch.x, normalize(expected, mean, std))
        assert batch.aug[:, :2].min() >= 0
        assert batch.aug[:, :2].max() <= 2 * pad
        if "flip" not in augment:
            assert (batch.aug[:, 2] == 0).all()


def test_normalize_off_scales_to_unit_range() -> None:
    images, labels = _data()
    loader = TensorLoader(images, labels, batch_size=50, mean=MEAN, std=STD, normalize_inputs=False)
    batch = next(iter(loader))
    torch.testing.assert_close(batch.x, images.float() / 255.0)


@pytest.mark.parametrize("world_size", [1, 2])
def test_a_cpu_store_on_a_cpu_device_yields_the_same_batches_bitwise(world_size: int) -> None:
    images, labels = _data()
    kwargs = {
        "batch_size": 7,
        "mean": MEAN,
        "std": STD,
        "augment": "pad_crop_flip",
        "pad": 2,
        "shuffle": True,
        "seed": 4,
        "world_size": world_size,
        "rank": world_size - 1,
    }
    plain = TensorLoader(images, labels, device="cpu", **kwargs)
    stored = TensorLoader(images, labels, device="cpu", store="cpu", **kwargs)
    assert plain.store == plain.device == stored.store == stored.device == CPU
    for loader in (plain, stored):
        loader.set_epoch(3)
    ours = list(stored)
    _assert_same_batches(list(plain), ours)
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    for batch in ours:  # and bitwise the indexed images, augmented and normalised
        assert torch.equal(batch.x, normalize(apply_params(images[batch.index], batch.aug, 2), mean, std))
        assert torch.equal(batch.y, labels[batch.index])


# --- build_data: splits and config checks -------------------------------------------------------------


@functools.cache
def _composed(option: str) -> DictConfig:
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=[f"data={option}"])
    GlobalHydra.instance().clear()
    return cfg


def data_cfg(option: str, *overrides: str) -> DictConfig:
    """The `data=option` node, composed once, with `key=value` overrides merged in (checked by the schema)."""
    return OmegaConf.merge(_composed(option), OmegaConf.from_dotlist([f"data.{o}" for o in overrides])).data


SYNTHETIC = ("train_size=200", "test_size=60", "batch_size=16", "image_size=8")


def synthetic_cfg(*overrides: str) -> DictConfig:
    return data_cfg("synthetic", *SYNTHETIC, *overrides)


def _image_keys(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_synthetic_bundle_shapes(tmp_path: Path) -> None:
    cfg = synthetic_cfg()
    bundle = build_data(cfg, tmp_path, seed=0, device=CPU)
    assert (bundle.name, bundle.num_classes, bundle.in_channels, bundle.image_size) == ("synthetic", 10, 3, 8)
    assert bundle.val is None
    assert bundle.train.num_samples == 200
    assert bundle.test.num_samples == 60
    assert len(bundle.train) == math.ceil(200 / 16)
    batch = next(iter(bundle.train))
    assert batch.x.shape == (16, 3, 8, 8)
    assert batch.x.dtype == torch.float32
    assert batch.y.dtype == torch.int64
    test_batch = next(iter(bundle.test))
    assert test_batch.x.shape == (60, 3, 8, 8)  # eval_batch_size 1000 > 60
    assert torch.equal(test_batch.index, torch.arange(60))  # evaluation is not shuffled


def test_train_subset_val_split_and_test_subset_sizes(tmp_path: Path) -> None:
    cfg = synthetic_cfg("train_subset=100", "val_split=0.2", "test_subset=30")
    bundle = build_data(cfg, tmp_path, seed=0, device=CPU)
    assert bundle.train.num_samples == 80
    assert bundle.val is not None
    assert bundle.val.num_samples == 20
    assert bundle.test.num_samples == 30

    full = make_synthetic(200, 60, 3, 8, 10)
    train_keys, val_keys = _image_keys(bundle.train.images), _image_keys(bundle.val.images)
    assert len(train_keys) == 80
    assert len(val_keys) == 20
    assert not train_keys & val_keys
    assert (train_keys | val_keys) <= _image_keys(full.train_x)
    assert torch.equal(bundle.test.images, full.test_x[:30])
    assert torch.equal(bundle.test.labels, full.test_y[:30])
    assert not bundle.val.shuffle
    assert bundle.val.augment == "none"


def test_subset_is_fixed_across_run_seeds(tmp_path: Path) -> None:
    cfg = synthetic_cfg("train_subset=90", "val_split=0.1")
    first = build_data(cfg, tmp_path, seed=0, device=CPU)
    second = build_data(cfg, tmp_path, seed=7, device=CPU)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.train.labels, second.train.labels)
    assert torch.equal(first.val.images, second.val.images)
    # ...while the run seed still changes the training order
    assert not torch.equal(next(iter(first.train)).index, next(iter(second.train)).index)


def test_train_subset_larger_than_the_set_takes_everything(tmp_path: Path) -> None:
    cfg = synthetic_cfg("train_subset=100000", "test_subset=100000")
    bundle = build_data(cfg, tmp_path, seed=0, device=CPU)
    assert bundle.train.num_samples == 200
    assert bundle.test.num_samples == 60


def test_world_size_shards_training_but_not_evaluation(tmp_path: Path) -> None:
    cfg = synthetic_cfg("val_split=0.25")
    whole = build_data(cfg, tmp_path, seed=3, device=CPU)
    shards = [build_data(cfg, tmp_path, seed=3, device=CPU, rank=r, world_size=2) for r in range(2)]
    batch = next(iter(whole.train))
    parts = [next(iter(s.train)) for s in shards]
    assert torch.equal(torch.cat([p.index for p in parts]), batch.index)
    torch.testing.assert_close(torch.cat([p.x for p in parts]), batch.x)
    for shard in shards:
        assert shard.test.world_size == 1
        assert shard.val.world_size == 1
        assert torch.equal(next(iter(shard.test)).index, next(iter(whole.test)).index)


def test_build_data_delivers_on_the_device_and_stores_where_on_device_says(tmp_path: Path) -> None:
    for on_device in (True, False):
        bundle = build_data(synthetic_cfg(f"on_device={on_device}", "val_split=0.25"), tmp_path, seed=0, device=CPU)
        for loader in (bundle.train, bundle.val, bundle.test):
            assert loader.device == loader.store == CPU


def test_build_data_refuses_batches_or_training_sets_too_small_for_the_world(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data\.batch_size: .*smaller than the 4 processes"):
        build_data(synthetic_cfg("batch_size=3"), tmp_path, seed=0, device=CPU, rank=0, world_size=4)
    with pytest.raises(ConfigError, match=r"^data\.train_subset: 3 training images give no step"):
        build_data(synthetic_cfg("train_subset=3"), tmp_path, seed=0, device=CPU, rank=0, world_size=4)
    bundle = build_data(synthetic_cfg("train_subset=4"), tmp_path, seed=0, device=CPU, rank=3, world_size=4)
    assert len(bundle.train) == 1
    assert [b.index.numel() for b in bundle.train] == [1]
    assert len(build_data(synthetic_cfg("train_subset=3"), tmp_path, seed=0, device=CPU).train) == 1


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("batch_size=0", "data.batch_size"),
        ("eval_batch_size=-1", "data.eval_batch_size"),
        ("val_split=1.5", "data.val_split"),
        ("val_split=1.0", "data.val_split"),
        ("val_split=-0.1", "data.val_split"),
        ("train_subset=0", "data.train_subset"),
        ("name=foo", "data.name"),
        ("augment=random_resized_crop_flip", "data.augment"),
        ("mean=[0.5]", "data.mean"),
    ],
)
def test_bad_data_values_name_the_key(tmp_path: Path, override: str, key: str) -> None:
    cfg = synthetic_cfg(override)
    with pytest.raises(ConfigError) as info:
        build_data(cfg, tmp_path, seed=0, device=CPU)
    assert str(info.value).startswith(f"{key}:")
    assert info.value.key == key


def test_an_unknown_augmentation_is_refused_when_the_config_is_built() -> None:
    """`data.augment` is a choice key: a value outside it never reaches the loaders."""
    with pytest.raises(ValidationError) as info:
        synthetic_cfg("augment=foo")
    assert info.value.full_key == "data.augment"
    assert "expected one of [none, flip, pad_crop, pad_crop_flip, random_resized_crop_flip]" in str(info.value)


def test_folder_datasets_refuse_tensor_augmentations(tmp_path: Path) -> None:
    cfg = data_cfg("imagefolder", f"root={tmp_path}", "augment=pad_crop_flip")
    with pytest.raises(ConfigError, match=r"^data\.augment: 'pad_crop_flip' is not available for imagef"):
        build_data(cfg, tmp_path, seed=0, device=CPU)


def test_to_device_leaves_cpu_tensors_alone_on_a_cpu_device() -> None:
    t = torch.arange(5)
    assert to_device(t, CPU) is t and not t.is_pinned()
