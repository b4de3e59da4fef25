"""The dataset registry: every data= option is a registered dataset, an unknown name is refused before any
file is read, and a dataset registered from outside meal trains through the ordinary loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from meal.data import DatasetSpec, build_data, check_data_config, dataset_names, dataset_spec, register_dataset
from meal.data import registry as registry_module
from meal.data.sources import TensorSplits, _torchvision_dataset
from meal.errors import ConfigError
from tests.conftest import compose_config

CONF_DATA = Path(__file__).resolve().parents[2] / "conf" / "data"


@pytest.mark.slow
def test_every_data_option_is_a_registered_dataset_and_back() -> None:
    options = {p.stem for p in CONF_DATA.glob("*.yaml")}
    names = {compose_config([f"data={option}"]).data.name for option in options}
    assert names == set(dataset_names())


def test_an_unknown_name_is_refused_naming_the_key_and_the_choices() -> None:
    cfg = compose_config(["data=synthetic"]).data
    cfg.name = "mnist"
    with pytest.raises(ConfigError) as info:
        check_data_config(cfg)
    assert info.value.key == "data.name"
    assert str(info.value) == f"data.name: unknown dataset 'mnist' (choose one of: {', '.join(dataset_names())})"


def test_a_name_without_a_torchvision_reader_no_longer_falls_through_to_svhn(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no torchvision reader for dataset 'mnist'"):
        _torchvision_dataset("mnist", tmp_path, True, False)


def test_augmentations_come_from_the_dataset() -> None:
    cfg = compose_config(["data=imagefolder"]).data
    assert "random_resized_crop_flip" in dataset_spec("imagefolder").augmentations
    cfg.augment = "pad_crop"
    with pytest.raises(ConfigError, match=r"^data\.augment: 'pad_crop' is not available for imagefolder"):
        check_data_config(cfg)


def test_a_registered_dataset_trains_through_the_ordinary_loaders(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []

    def load(cfg: object, folder: Path) -> TensorSplits:
        seen.append(folder)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=g)
        y = torch.arange(40) % 3
        return TensorSplits(x[:30], y[:30], x[30:], y[30:])

    monkeypatch.setattr(registry_module, "_DATASETS", dict(registry_module._DATASETS))
    register_dataset(DatasetSpec("stripes", "tensor", load, ("none", "flip"), "a test set"))
    assert "stripes" in dataset_names()
    cfg = compose_config(
        [
            "data=synthetic",
            "data.name=stripes",
            "data.num_classes=3",
            "data.in_channels=1",
            "data.image_size=8",
            "data.mean=[0.5]",
            "data.std=[0.25]",
            "data.batch_size=10",
            "data.val_split=0.2",
        ]
    ).data
    bundle = build_data(cfg, Path("/nonexistent/data"), seed=0, device=torch.device("cpu"))
    assert seen == [Path("/nonexistent/data/stripes")]
    assert (bundle.train.num_samples, bundle.val.num_samples, bundle.test.num_samples) == (24, 6, 10)
    batch = next(iter(bundle.train))
    assert batch.x.shape == (10, 1, 8, 8) and set(batch.y.tolist()) <= {0, 1, 2}


def test_a_spec_must_match_its_layout() -> None:
    with pytest.raises(ValueError, match="a tensor dataset needs `load`"):
        register_dataset(DatasetSpec("broken", "tensor", None, ("none",), ""))
    assert "broken" not in dataset_names()
