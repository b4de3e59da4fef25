"""Dataset sources: IDX files, Fashion-MNIST, CIFAR/SVHN files in torchvision's formats, ImageFolder trees,
synthetic data."""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import logging
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

import meal.data.sources as sources
from meal.config import register
from meal.data import build_data
from meal.data.idx import read_idx
from meal.data.sources import load_fashion_mnist, make_synthetic
from meal.errors import ConfigError, DataError

CPU = torch.device("cpu")
CONF = Path(__file__).resolve().parents[2] / "conf"


def _root_conftest():
    """tests/conftest.py as a module (a plain `import conftest` may find another directory's conftest)."""
    name = "_meal_tests_root_conftest"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


needs_fashion_mnist = _root_conftest().needs_fashion_mnist


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


# --- IDX ---------------------------------------------------------------------------------------------

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_uint8_raw_and_gz(tmp_path: Path, name: str) -> None:
    array = np.random.default_rng(0).integers(0, 256, (4, 3, 5), dtype=np.uint8)
    out = read_idx(write_idx(tmp_path / name, array))
    assert out.dtype == torch.uint8
    assert out.shape == (4, 3, 5)
    assert out.tolist() == array.tolist()


@pytest.mark.parametrize(
    ("dtype", "values", "torch_dtype"),
    [
        (">i2", [-300, 0, 7, 32000], torch.int16),
        (">i4", [-70000, 1, 2, 2**30], torch.int32),
        (">f4", [0.5, -1.25, 3.0, 1e6], torch.float32),
    ],
)
def test_read_idx_big_endian_types(tmp_path: Path, dtype: str, values: list, torch_dtype: torch.dtype) -> None:
    array = np.array(values, dtype=dtype).reshape(2, 2)
    out = read_idx(write_idx(tmp_path / "values-idx2.gz", array))
    assert out.dtype == torch_dtype
    assert out.tolist() == [values[:2], values[2:]]


def test_read_idx_labels_file(tmp_path: Path) -> None:
    labels = np.array([9, 0, 0, 3, 1], dtype=np.uint8)
    assert read_idx(write_idx(tmp_path / "labels-idx1-ubyte", labels)).tolist() == [9, 0, 0, 3, 1]


@pytest.mark.parametrize("keep", [9, 4 + 12 + 30], ids=["in-header", "in-body"])
@pytest.mark.parametrize("name", ["short-idx3-ubyte", "short-idx3-ubyte.gz"])
def test_truncated_idx_names_the_file(tmp_path: Path, name: str, keep: int) -> None:
    data = idx_bytes(np.zeros((4, 3, 5), dtype=np.uint8))[:keep]
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(DataError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_cut_gzip_stream_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 28, 28), dtype=np.uint8)))[:40])
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_bad_magic_and_missing_idx_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"\x01\x02\x08\x01rest")
    with pytest.raises(DataError, match="bad magic") as info:
        read_idx(bad)
    assert str(bad) in str(info.value)
    missing = tmp_path / "missing-idx1-ubyte.gz"
    with pytest.raises(DataError) as info:
        read_idx(missing)
    assert str(missing) in str(info.value)


# --- Fashion-MNIST -----------------------------------------------------------------------------------


def write_fake_fashion(
    directory: Path, n_train: int = 12, n_test: int = 5, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in sources.FASHION_FILES.items():
        write_idx(directory / (f"{stem}.gz" if gz else stem), arrays[key])
    return arrays


@pytest.fixture
def no_debian_fashion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    missing = tmp_path / "no-debian-package"
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", missing)
    return missing


@pytest.mark.slow
@needs_fashion_mnist
def test_fashion_mnist_from_the_debian_package(tmp_path: Path) -> None:
    splits = load_fashion_mnist(None, tmp_path / "absent", download=False)
    assert splits.train_x.shape == (60000, 1, 28, 28)
    assert splits.test_x.shape == (10000, 1, 28, 28)
    assert splits.train_x.dtype == splits.test_x.dtype == torch.uint8
    assert splits.train_y.dtype == splits.test_y.dtype == torch.int64
    assert torch.bincount(splits.train_y).tolist() == [6000] * 10
    assert torch.bincount(splits.test_y).tolist() == [1000] * 10
    assert 0 < splits.train_x.float().mean() < 255


@pytest.mark.slow
@needs_fashion_mnist
def test_build_data_on_fashion_mnist(tmp_path: Path) -> None:
    cfg = data_cfg("fashion_mnist", "train_subset=null", "val_split=0.1")
    bundle = build_data(cfg, tmp_path, seed=0, device=CPU)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (10, 1, 28)
    assert bundle.train.num_samples == 54000
    assert bundle.val.num_samples == 6000
    assert bundle.test.num_samples == 10000
    batch = next(iter(bundle.train))
    assert batch.x.shape == (128, 1, 28, 28)
    assert batch.x.dtype == torch.float32


def test_fashion_mnist_root_comes_first_and_accepts_torchvision_layout(tmp_path: Path, no_debian_fashion: Path) -> None:
    arrays = write_fake_fashion(tmp_path / "root" / "FashionMNIST" / "raw", gz=False)
    write_fake_fashion(tmp_path / "default", n_train=3, n_test=2)
    splits = load_fashion_mnist(tmp_path / "root", tmp_path / "default", download=False)
    assert splits.train_x.shape == (12, 1, 28, 28)
    assert splits.train_x[:, 0].numpy().tolist() == arrays["train_images"].tolist()
    assert splits.test_y.tolist() == arrays["test_labels"].tolist()
    assert splits.train_y.dtype == torch.int64


def test_fashion_mnist_falls_back_to_the_default_root(tmp_path: Path, no_debian_fashion: Path) -> None:
    arrays = write_fake_fashion(tmp_path / "default", n_train=4, n_test=3)
    splits = load_fashion_mnist(None, tmp_path / "default", download=False)
    assert splits.test_x.shape == (3, 1, 28, 28)
    assert splits.test_x[:, 0].numpy().tolist() == arrays["test_images"].tolist()
    assert splits.train_y.tolist() == arrays["train_labels"].tolist()


def test_missing_fashion_mnist_explains_how_to_get_it(tmp_path: Path, no_debian_fashion: Path) -> None:
    with pytest.raises(DataError) as info:
        load_fashion_mnist(None, tmp_path / "default", download=False)
    message = str(info.value)
    assert message.startswith("data.root:")
    assert "dataset-fashion-mnist" in message
    assert "data.download" in message
    for path in (no_debian_fashion, tmp_path / "default"):
        assert str(path) in message


@pytest.mark.parametrize("root_kind", ["partial", "absent", "empty"])
def test_an_explicit_fashion_root_without_the_data_is_an_error_not_a_fallback(
    tmp_path: Path, no_debian_fashion: Path, root_kind: str
) -> None:
    write_fake_fashion(tmp_path / "default", n_train=4, n_test=3)  # a fallback that must not be used
    write_fake_fashion(no_debian_fashion, n_train=5, n_test=2)
    root = tmp_path / root_kind
    if root_kind == "partial":  # three of the four files
        write_fake_fashion(root)
        (root / "t10k-labels-idx1-ubyte.gz").unlink()
    elif root_kind == "empty":
        root.mkdir()
    with pytest.raises(DataError) as info:
        load_fashion_mnist(root, tmp_path / "default", download=False)
    message = str(info.value)
    assert message.startswith(f"data.root: Fashion-MNIST not found in {root} (an explicit data.root is the only")
    assert str(tmp_path / "default") not in message and str(no_debian_fashion) not in message
    assert "data.download=true" in message


def test_build_data_with_a_mistyped_fashion_root_is_refused(tmp_path: Path) -> None:
    """Even with the Debian package installed, a data.root that does not exist is not replaced by it."""
    cfg = data_cfg("fashion_mnist", f"root={tmp_path / 'fashoin'}")
    with pytest.raises(DataError, match=r"^data\.root: Fashion-MNIST not found in \S+/fashoin \("):
        build_data(cfg, tmp_path / "data_dir", seed=0, device=CPU)


def test_build_data_without_fashion_mnist_is_a_data_error(tmp_path: Path, no_debian_fashion: Path) -> None:
    with pytest.raises(DataError, match="dataset-fashion-mnist") as info:
        build_data(data_cfg("fashion_mnist", "download=false"), tmp_path, seed=0, device=CPU)
    assert str(tmp_path / "fashion_mnist") in str(info.value)  # data_dir/fashion_mnist is searched too


def test_build_data_reads_generated_fashion_files(tmp_path: Path, no_debian_fashion: Path) -> None:
    arrays = write_fake_fashion(tmp_path / "fm", n_train=20, n_test=6)
    cfg = data_cfg("fashion_mnist", f"root={tmp_path / 'fm'}", "batch_size=8")
    bundle = build_data(cfg, tmp_path / "data_dir", seed=0, device=CPU)
    assert bundle.train.num_samples == 20
    batch = next(iter(bundle.train))
    assert batch.x.shape == (8, 1, 28, 28)
    images = torch.from_numpy(arrays["train_images"]).float().div(255.0)
    expected = (images[batch.index] - 0.2860) / 0.3530
    torch.testing.assert_close(batch.x[:, 0], expected)
    assert batch.y.tolist() == arrays["train_labels"][batch.index.numpy()].tolist()
    test = next(iter(bundle.test))
    assert test.y.tolist() == arrays["test_labels"].tolist()


@pytest.mark.parametrize(
    ("override", "key"),
    [("image_size=32", "data.in_channels"), ("num_classes=5", "data.num_classes")],
)
def test_dataset_shape_must_match_the_config(tmp_path: Path, no_debian_fashion: Path, override: str, key: str) -> None:
    write_fake_fashion(tmp_path / "fm")
    cfg = data_cfg("fashion_mnist", f"root={tmp_path / 'fm'}", override)
    with pytest.raises(ConfigError) as info:
        build_data(cfg, tmp_path, seed=0, device=CPU)
    assert str(info.value).startswith(f"{key}:")


# --- CIFAR-10 / CIFAR-100 / SVHN in torchvision's file formats ----------------------------------------


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pickle(path: Path, entry: dict) -> None:
    with path.open("wb") as handle:
        pickle.dump(entry, handle)


def write_cifar10(root: Path, per_batch: int = 3, n_test: int = 5) -> dict[str, np.ndarray]:
    """cifar-10-batches-py with five small training batches; returns the images (N, 3, 32, 32) and labels."""
    rng = np.random.default_rng(10)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        _pickle(
            folder / f"data_batch_{i}",
            {
                "batch_label": f"training batch {i} of 5",
                "data": images.reshape(per_batch, -1),
                "labels": labels,
                "filenames": [f"img{i}_{j}.png" for j in range(per_batch)],
            },
        )
        train_x.append(images)
        train_y += labels
    test_x = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    test_y = [9, 0, 4, 4, 1][:n_test]
    _pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "data": test_x.reshape(n_test, -1),
            "labels": test_y,
            "filenames": [f"t{j}.png" for j in range(n_test)],
        },
    )
    _pickle(
        folder / "batches.meta",
        {"label_names": [f"class{c}" for c in range(10)], "num_cases_per_batch": per_batch, "num_vis": 3072},
    )
    return {
        "train_x": np.concatenate(train_x),
        "train_y": np.array(train_y),
        "test_x": test_x,
        "test_y": np.array(test_y),
    }


def write_cifar100(root: Path, n_train: int = 8, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(100)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        fine[0] = 99
        _pickle(
            folder / split,
            {
                "filenames": [f"{split}{j}.png" for j in range(n)],
                "batch_label": split,
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "data": images.reshape(n, -1),
            },
        )
        arrays[f"{split}_x"], arrays[f"{split}_y"] = images, np.array(fine)
    _pickle(
        folder / "meta",
        {"fine_label_names": [f"fine{c}" for c in range(100)], "coarse_label_names": [f"coarse{c}" for c in range(20)]},
    )
    return arrays


def register_cifar_checksums(monkeypatch: pytest.MonkeyPatch, cls: type, root: Path) -> None:
    """Make torchvision's integrity check (md5 of every file) accept the generated files, and only them."""
    folder = root / cls.base_folder
    monkeypatch.setattr(cls, "train_list", [[name, _md5(folder / name)] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, _md5(folder / name)] for name, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})


@pytest.fixture
def cifar10_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, np.ndarray]]:
    from torchvision.datasets import CIFAR10

    root = tmp_path / "cifar10"
    arrays = write_cifar10(root)
    register_cifar_checksums(monkeypatch, CIFAR10, root)
    return root, arrays


def test_build_data_reads_cifar10_files(tmp_path: Path, cifar10_root) -> None:
    root, arrays = cifar10_root
    cfg = data_cfg("cifar10", f"root={root}", "batch_size=4")
    bundle = build_data(cfg, tmp_path / "unused", seed=0, device=CPU)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (10, 3, 32)
    assert bundle.train.images.dtype == torch.uint8
    assert bundle.train.images.numpy().tolist() == arrays["train_x"].tolist()
    assert bundle.train.labels.tolist() == arrays["train_y"].tolist()
    assert len(bundle.train) == 4  # 15 images, batches of 4
    seen = []
    for batch in bundle.train:  # augmented (pad_crop_flip): shape and labels, not pixels
        assert batch.x.dtype == torch.float32
        assert batch.x.shape == (batch.index.numel(), 3, 32, 32)
        assert batch.y.tolist() == arrays["train_y"][batch.index.numpy()].tolist()
        seen += batch.index.tolist()
    assert sorted(seen) == list(range(15))

    test = next(iter(bundle.test))  # not augmented: exact pixels, normalised with the CIFAR statistics
    assert test.y.tolist() == [9, 0, 4, 4, 1]
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    expected = (torch.from_numpy(arrays["test_x"]).float() / 255.0 - mean) / std
    torch.testing.assert_close(test.x, expected)


def test_build_data_reads_cifar100_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import CIFAR100

    root = tmp_path / "c100"
    arrays = write_cifar100(root)
    register_cifar_checksums(monkeypatch, CIFAR100, root)
    cfg = data_cfg("cifar100", f"root={root}", "batch_size=8", "augment=none")
    bundle = build_data(cfg, tmp_path, seed=0, device=CPU)
    assert bundle.num_classes == 100
    assert bundle.train.labels.tolist() == arrays["train_y"].tolist()
    assert bundle.test.labels.tolist() == arrays["test_y"].tolist()
    batch = next(iter(bundle.train))
    assert batch.x.shape == (8, 3, 32, 32)
    assert batch.y.tolist() == arrays["train_y"][batch.index.numpy()].tolist()
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    expected = (torch.from_numpy(arrays["train_x"][batch.index.numpy()]).float() / 255.0 - mean) / std
    torch.testing.assert_close(batch.x, expected)


def test_cifar_with_a_corrupt_file_is_a_data_error(tmp_path: Path, cifar10_root) -> None:
    root, _ = cifar10_root
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-10])
    cfg = data_cfg("cifar10", f"root={root}")
    with pytest.raises(DataError) as info:
        build_data(cfg, tmp_path, seed=0, device=CPU)
    assert str(info.value).startswith("data.root:")
    assert str(root) in str(info.value)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "svhn"])
def test_missing_torchvision_sets_explain_the_fix(tmp_path: Path, dataset: str) -> None:
    cfg = data_cfg(dataset, "download=false")
    with pytest.raises(DataError) as info:
        build_data(cfg, tmp_path, seed=0, device=CPU)
    message = str(info.value)
    assert message.startswith("data.root:")
    assert str(tmp_path / dataset) in message  # data_dir/<dataset> when data.root is unset
    assert "data.download" in message


def test_an_explicit_torchvision_root_is_the_only_place_looked_at(tmp_path: Path, cifar10_root) -> None:
    """data_dir/cifar10 holds the data, but data.root names an empty folder: an error naming that folder."""
    data_dir = cifar10_root[0].parent  # the fixture wrote <tmp_path>/cifar10
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    assert build_data(data_cfg("cifar10"), data_dir, seed=0, device=CPU).train.num_samples == 15
    with pytest.raises(DataError) as info:
        build_data(data_cfg("cifar10", f"root={empty}"), data_dir, seed=0, device=CPU)
    assert str(info.value).startswith(f"data.root: cifar10 not found or incomplete in {empty} (")
    assert str(cifar10_root[0]) not in str(info.value).replace(str(empty), "")


def test_build_data_reads_svhn_mat_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.io as scipy_io  # a dependency of meal: torchvision reads SVHN's .mat files with it
    from torchvision.datasets import SVHN

    rng = np.random.default_rng(7)
    root = tmp_path / "svhn"
    root.mkdir()
    arrays = {}
    split_list = {}
    for split, labels in (("train", [10, 1, 2, 3, 9, 10, 5]), ("test", [4, 10, 8])):
        n = len(labels)
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # H x W x C x N, as SVHN ships it
        path = root / f"{split}_32x32.mat"
        scipy_io.savemat(str(path), {"X": x, "y": np.array(labels, dtype=np.uint8).reshape(n, 1)})
        split_list[split] = [SVHN.split_list[split][0], path.name, _md5(path)]
        arrays[split] = (x, labels)
    monkeypatch.setattr(SVHN, "split_list", {**SVHN.split_list, **split_list})

    cfg = data_cfg("svhn", f"root={root}", "batch_size=7", "augment=none", "normalize=false")
    bundle = build_data(cfg, tmp_path, seed=0, device=CPU)
    assert bundle.train.labels.tolist() == [0, 1, 2, 3, 9, 0, 5]
    assert bundle.test.labels.tolist() == [4, 0, 8]
    x, _ = arrays["train"]
    assert bundle.train.images.shape == (7, 3, 32, 32)
    assert bundle.train.images.numpy().tolist() == x.transpose(3, 2, 0, 1).tolist()
    batch = next(iter(bundle.train))
    torch.testing.assert_close(batch.x, bundle.train.images[batch.index].float() / 255.0)
    assert batch.y.tolist() == bundle.train.labels[batch.index].tolist()


# --- ImageFolder -------------------------------------------------------------------------------------

CLASSES = ("ant", "bee", "cat")


def write_image_tree(root: Path) -> dict[str, tuple[int, int]]:
    """ROOT/{train,val}/<class>/*.png, 4 images per class, sizes varying; returns path -> (width, height)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    sizes = {}
    for split in ("train", "val"):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                width, height = 40 + 9 * i + c, 34 + 5 * ((i + c) % 3)
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                path = folder / f"{i}.png"
                Image.fromarray(pixels).save(path)
                sizes[str(path)] = (width, height)
    return sizes


FOLDER = ("image_size=32", "resize=36", "batch_size=4", "workers=0", "num_classes=3", "eval_batch_size=5")


@pytest.fixture
def image_tree(tmp_path: Path) -> tuple[Path, dict[str, tuple[int, int]]]:
    root = tmp_path / "images"
    return root, write_image_tree(root)


def _folder_bundle(root: Path, *overrides: str, seed: int = 0, **kwargs):
    cfg = data_cfg("imagefolder", *FOLDER, f"root={root}", *overrides)
    return build_data(cfg, root.parent, seed=seed, device=CPU, **kwargs)


def test_imagefolder_batches_and_crop_boxes(image_tree) -> None:
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    root, sizes = image_tree
    bundle = _folder_bundle(root)
    train = bundle.train
    assert train.num_samples == 12
    assert len(train) == 3
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    seen = []
    for batch in train:
        assert batch.x.shape == (4, 3, 32, 32)
        assert batch.x.dtype == torch.float32
        assert batch.aug.shape == (4, 5)
        rows = zip(batch.aug.tolist(), batch.index.tolist(), batch.y.tolist(), batch.x, strict=True)
        for row, index, label, x in rows:
            path, folder_label = train.dataset.folder.samples[index]
            assert label == folder_label == CLASSES.index(Path(path).parent.name)
            width, height = sizes[path]
            top, left, h, w, flip = row
            assert top >= 0 and top + h <= height and h > 0
            assert left >= 0 and left + w <= width and w > 0
            assert flip in (0, 1)
            # the box in `aug` is the one that produced x
            crop = F.resized_crop(Image.open(path).convert("RGB"), top, left, h, w, [32, 32], antialias=True)
            if flip:
                crop = F.horizontal_flip(crop)
            expected = (F.to_dtype(F.pil_to_tensor(crop), torch.float32, scale=True) - mean) / std
            torch.testing.assert_close(x, expected)
        seen += batch.index.tolist()
    assert sorted(seen) == list(range(12))

    test = list(bundle.test)
    assert [b.x.shape[0] for b in test] == [5, 5, 2]
    assert all(b.x.shape[1:] == (3, 32, 32) for b in test)
    assert torch.cat([b.index for b in test]).tolist() == list(range(12))
    assert all((b.aug == 0).all() for b in test)
    assert torch.cat([b.y for b in test]).tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_imagefolder_epoch_replays_and_resumes(image_tree) -> None:
    root, _ = image_tree
    train = _folder_bundle(root).train
    train.set_epoch(4)
    full = list(train.iterate())
    again = list(train.iterate())
    tail = list(train.iterate(start_step=1))
    assert len(full) == 3
    assert len(tail) == 2
    for a, b in zip(full, again, strict=True):
        assert torch.equal(a.index, b.index)
        assert torch.equal(a.aug, b.aug)
        assert torch.equal(a.x, b.x)
    for a, b in zip(full[1:], tail, strict=True):
        assert torch.equal(a.index, b.index)
        assert torch.equal(a.aug, b.aug)
        assert torch.equal(a.x, b.x)

    def boxes(batches: list) -> torch.Tensor:  # crop rows in dataset-index order
        index = torch.cat([b.index for b in batches])
        return torch.cat([b.aug for b in batches])[index.argsort()]

    train.set_epoch(5)
    other_epoch = boxes(list(train.iterate()))
    other_seed = _folder_bundle(root, seed=1).train
    other_seed.set_epoch(4)
    # each image gets new crops in another epoch or run
    assert (boxes(full) != other_epoch).any(dim=1).sum() >= 10
    assert (boxes(full) != boxes(list(other_seed.iterate()))).any(dim=1).sum() >= 10


@pytest.mark.parametrize(
    ("subset", "world_size", "sizes"),
    [
        (9, 2, [[2, 2], [2, 2]]),  # last global batch (1 image) < 2 ranks: dropped
        (9, 3, [[2, 1, 1], [2, 1, 1]]),  # likewise for 3 ranks
        (10, 2, [[2, 2], [2, 2], [1, 1]]),  # last global batch (2 images) shared one each: kept
    ],
)
def test_imagefolder_ranks_split_the_global_batch(
    image_tree, subset: int, world_size: int, sizes: list[list[int]]
) -> None:
    root, _ = image_tree
    whole = _folder_bundle(root, f"train_subset={subset}").train
    order = torch.cat([b.index for b in whole])  # the single-process epoch, in order
    shards = [
        _folder_bundle(root, f"train_subset={subset}", rank=r, world_size=world_size).train for r in range(world_size)
    ]
    batches = [list(shard) for shard in shards]
    assert [len(shard) for shard in shards] == [len(b) for b in batches] == [len(sizes)] * world_size
    assert [[p.x.shape[0] for p in parts] for parts in zip(*batches, strict=True)] == sizes  # never empty
    whole_batches = list(whole)
    for step, parts in enumerate(zip(*batches, strict=True)):
        for field in ("x", "y", "index", "aug"):
            assert torch.equal(torch.cat([getattr(p, field) for p in parts]), getattr(whole_batches[step], field))
    union = torch.cat([b.index for shard in batches for b in shard])
    tail = subset % 4 if subset % 4 < world_size else 0
    assert sorted(union.tolist()) == sorted(order[: subset - tail].tolist())
    assert not set(order[subset - tail :].tolist()) & set(union.tolist())
    resumed = list(shards[-1].iterate(1))
    assert [b.index.tolist() for b in resumed] == [b.index.tolist() for b in batches[-1][1:]]


def test_imagefolder_subsets_and_validation_split(image_tree) -> None:
    root, _ = image_tree
    bundle = _folder_bundle(root, "val_split=0.25", "test_subset=7")
    assert bundle.train.num_samples == 9
    assert bundle.val.num_samples == 3
    assert bundle.test.num_samples == 7
    assert not set(bundle.train.subset.tolist()) & set(bundle.val.subset.tolist())
    assert not bundle.val.dataset.train  # validation images are not augmented
    again = _folder_bundle(root, "val_split=0.25", seed=9)
    assert torch.equal(again.val.subset, bundle.val.subset)
    small = _folder_bundle(root, "train_subset=6")
    assert small.train.num_samples == 6
    assert small.val is None


def test_imagefolder_with_more_classes_than_configured(image_tree) -> None:
    root, _ = image_tree
    with pytest.raises(ConfigError, match=r"^data\.num_classes:"):
        _folder_bundle(root, "num_classes=2")


def test_imagefolder_missing_or_empty_folders(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        _folder_bundle(missing)
    assert str(missing / "train") in str(info.value)

    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    with pytest.raises(DataError) as info:
        _folder_bundle(empty)
    assert str(empty / "train") in str(info.value)

    no_images = tmp_path / "no_images"
    (no_images / "train" / "ant").mkdir(parents=True)
    (no_images / "train" / "ant" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as info:
        _folder_bundle(no_images)
    assert str(no_images / "train") in str(info.value)


@pytest.mark.parametrize(
    ("augment", "workers"), [("random_resized_crop_flip", 0), ("none", 0), ("random_resized_crop_flip", 1)]
)
def test_unreadable_image_names_the_file(image_tree, augment: str, workers: int) -> None:
    root, _ = image_tree
    bad = root / "train" / "bee" / "broken.png"
    bad.write_bytes(b"\x89PNG this is not really an image" * 3)
    bundle = _folder_bundle(root, f"augment={augment}", f"workers={workers}")
    assert bundle.train.num_samples == 13  # the file is listed; reading it fails
    with pytest.raises(DataError) as info:
        for _ in bundle.train:
            pass
    assert str(bad) in str(info.value)


# --- synthetic ---------------------------------------------------------------------------------------


def test_synthetic_shapes_and_determinism() -> None:
    splits = make_synthetic(300, 100, 3, 8, 5)
    assert splits.train_x.shape == (300, 3, 8, 8)
    assert splits.test_x.shape == (100, 3, 8, 8)
    assert splits.train_x.dtype == torch.uint8
    assert splits.train_y.dtype == torch.int64
    assert set(splits.train_y.tolist()) == set(range(5))
    assert int(splits.test_y.min()) >= 0 and int(splits.test_y.max()) < 5
    again = make_synthetic(300, 100, 3, 8, 5)
    for a, b in zip(splits, again, strict=True):
        assert torch.equal(a, b)
    other = make_synthetic(300, 100, 3, 8, 5, seed=1)
    assert not torch.equal(splits.train_x, other.train_x)
    one_channel = make_synthetic(4, 2, 1, 28, 10)
    assert one_channel.train_x.shape == (4, 1, 28, 28)


def test_synthetic_labels_are_learnable() -> None:
    splits = make_synthetic(500, 200, 3, 8, 10)
    train, test = splits.train_x.float().flatten(1), splits.test_x.float().flatten(1)
    centroids = torch.stack([train[splits.train_y == c].mean(0) for c in range(10)])
    predicted = torch.cdist(test, centroids).argmin(1)
    assert (predicted == splits.test_y).float().mean() > 0.9


def _rename_class(root: Path, split: str, old: str, new: str | None) -> None:
    """Rename (or, with `new` None, delete) one class folder of a split."""
    import shutil

    folder = root / split / old
    if new is None:
        shutil.rmtree(folder)
    else:
        folder.rename(root / split / new)


@pytest.mark.slow
def test_a_validation_folder_lacking_a_class_is_refused(image_tree) -> None:
    root, _ = image_tree
    _rename_class(root, "val", "bee", None)  # torchvision alone would index cat as 1 in val/, 2 in train/
    with pytest.raises(ConfigError) as info:
        _folder_bundle(root)
    assert info.value.key == "data.root"
    assert str(info.value) == (
        f"data.root: {root / 'val'} lacks 1 class folder(s) of {root / 'train'}: bee; its labels would not match "
        f"the training split's (give {root / 'val'} exactly the class folders of {root / 'train'})"
    )


def test_a_validation_folder_with_an_unknown_class_is_refused(image_tree) -> None:
    root, _ = image_tree
    _rename_class(root, "val", "cat", "cow")
    with pytest.raises(ConfigError) as info:
        _folder_bundle(root)
    message = str(info.value)
    assert message.startswith(
        f"data.root: {root / 'val'} lacks 1 class folder(s) of {root / 'train'}: cat and "
        f"has 1 class folder(s) that {root / 'train'} lacks: cow;"
    )


@pytest.mark.slow
def test_validation_labels_follow_the_training_class_map(image_tree) -> None:
    root, _ = image_tree
    bundle = _folder_bundle(root, "val_split=0.25")
    train_map = bundle.train.dataset.folder.class_to_idx
    assert train_map == {"ant": 0, "bee": 1, "cat": 2}
    assert bundle.test.dataset.folder.class_to_idx == train_map
    assert bundle.val.dataset.folder.class_to_idx == train_map
    for loader in (bundle.test, bundle.val):
        for batch in loader:
            for index, label in zip(batch.index.tolist(), batch.y.tolist(), strict=True):
                path, _ = loader.dataset.folder.samples[index]
                assert label == train_map[Path(path).parent.name]


# --- data.download: auto (the default), true, false ----------------------------------------------------


class FakeFashionDownload:
    """Stands in for torchvision's download: records where it was asked to write, then writes small files."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.targets: list[Path] = []
        self.fail = fail
        self.arrays: dict[str, np.ndarray] = {}

    def __call__(self, target: Path) -> None:
        self.targets.append(target)
        if self.fail is not None:
            raise self.fail
        self.arrays = write_fake_fashion(target / "FashionMNIST" / "raw", n_train=10, n_test=4, gz=False)


@pytest.fixture
def fake_download(monkeypatch: pytest.MonkeyPatch) -> FakeFashionDownload:
    fake = FakeFashionDownload()
    monkeypatch.setattr(sources, "download_fashion_mnist", fake)
    return fake


def test_download_defaults_to_auto() -> None:
    assert data_cfg("fashion_mnist").download == "auto"
    assert data_cfg("cifar10").download == "auto"


def test_auto_downloads_fashion_mnist_found_nowhere_into_the_data_dir(
    tmp_path: Path, no_debian_fashion: Path, fake_download: FakeFashionDownload, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meal.data.sources")
    bundle = build_data(data_cfg("fashion_mnist", "train_subset=null"), tmp_path / "data_dir", seed=0, device=CPU)
    assert fake_download.targets == [tmp_path / "data_dir" / "fashion_mnist"]
    assert bundle.train.num_samples == 10 and bundle.test.num_samples == 4
    assert next(iter(bundle.test)).y.tolist() == fake_download.arrays["test_labels"].tolist()
    said = [r.getMessage() for r in caplog.records if "downloading it into" in r.getMessage()]
    assert said == [
        f"Fashion-MNIST not found in {no_debian_fashion}, {tmp_path / 'data_dir' / 'fashion_mnist'}: "
        f"downloading it into {tmp_path / 'data_dir' / 'fashion_mnist'}"
    ]
    # The next run finds the downloaded files and downloads nothing.
    build_data(data_cfg("fashion_mnist"), tmp_path / "data_dir", seed=0, device=CPU)
    assert len(fake_download.targets) == 1


def test_auto_never_downloads_into_an_explicit_root(
    tmp_path: Path, no_debian_fashion: Path, fake_download: FakeFashionDownload
) -> None:
    with pytest.raises(DataError, match=r"^data\.root: Fashion-MNIST not found in \S+/mine \(an explicit"):
        build_data(data_cfg("fashion_mnist", f"root={tmp_path / 'mine'}"), tmp_path, seed=0, device=CPU)
    assert fake_download.targets == []


def test_download_true_downloads_into_an_explicit_root(
    tmp_path: Path, no_debian_fashion: Path, fake_download: FakeFashionDownload
) -> None:
    cfg = data_cfg("fashion_mnist", f"root={tmp_path / 'mine'}", "download=true", "train_subset=null")
    assert build_data(cfg, tmp_path, seed=0, device=CPU).train.num_samples == 10
    assert fake_download.targets == [tmp_path / "mine"]


def test_download_false_never_downloads(
    tmp_path: Path, no_debian_fashion: Path, fake_download: FakeFashionDownload
) -> None:
    with pytest.raises(DataError, match=r"set data\.download=auto"):
        build_data(data_cfg("fashion_mnist", "download=false"), tmp_path, seed=0, device=CPU)
    assert fake_download.targets == []


def test_auto_without_a_network_names_the_debian_package_and_data_root(
    tmp_path: Path, no_debian_fashion: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.error

    fake = FakeFashionDownload(fail=urllib.error.URLError("[Errno -3] Temporary failure in name resolution"))
    monkeypatch.setattr(sources, "download_fashion_mnist", fake)
    with pytest.raises(DataError) as info:
        build_data(data_cfg("fashion_mnist"), tmp_path / "data_dir", seed=0, device=CPU)
    message = str(info.value)
    assert fake.targets == [tmp_path / "data_dir" / "fashion_mnist"]
    assert message.startswith(f"data.root: Fashion-MNIST not found in {no_debian_fashion}, ")
    assert "the download into" in message and "Temporary failure in name resolution" in message
    assert "apt-get install dataset-fashion-mnist" in message and "point data.root at it" in message
    assert "\n" not in message


def test_auto_downloads_a_missing_torchvision_set_and_reports_a_failed_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types
    import urllib.error

    calls: list[tuple[str, bool, bool]] = []
    online = {"value": True}

    def fake_dataset(name: str, root: Path, train: bool, download: bool) -> object:
        calls.append((name, train, download))
        if not download:
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        if not online["value"]:
            raise urllib.error.URLError("Network is unreachable")
        n = 6 if train else 3
        return types.SimpleNamespace(data=np.zeros((n, 32, 32, 3), dtype=np.uint8), targets=list(range(n)))

    monkeypatch.setattr(sources, "_torchvision_dataset", fake_dataset)
    bundle = build_data(data_cfg("cifar10", "train_subset=null"), tmp_path, seed=0, device=CPU)
    assert (bundle.train.num_samples, bundle.test.num_samples) == (6, 3)
    assert calls == [("cifar10", True, False), ("cifar10", True, True), ("cifar10", False, True)]

    online["value"] = False
    with pytest.raises(DataError) as info:
        build_data(data_cfg("cifar10"), tmp_path, seed=0, device=CPU)
    assert str(info.value).startswith(
        f"data.root: cifar10 not found in {tmp_path / 'cifar10'} and the download "
        "failed (<urlopen error Network is unreachable>)"
    )
    assert "point data.root at it" in str(info.value)
    calls.clear()
    with pytest.raises(DataError):  # an explicit data.root is never downloaded into with auto
        build_data(data_cfg("cifar10", f"root={tmp_path / 'mine'}"), tmp_path, seed=0, device=CPU)
    assert calls == [("cifar10", True, False)]


def test_a_bad_download_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data\.download: must be auto, true or false, got 'maybe'"):
        build_data(data_cfg("synthetic", "download=maybe"), tmp_path, seed=0, device=CPU)
