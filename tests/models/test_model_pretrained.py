"""Loading state-dict files: round trips, accepted wrappers, one-line CheckpointErrors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from meal.errors import CheckpointError
from meal.models import build_model


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.fixture
def trained() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    model = build_model("fmnist_tiny", 10, 1, 28)
    model(torch.randn(4, 1, 28, 28))  # moves the BatchNorm running statistics off their defaults
    return model.state_dict()


def test_round_trip(tmp_path: Path, trained: dict[str, torch.Tensor]) -> None:
    path = _save(trained, tmp_path / "tiny.pt")
    torch.manual_seed(2)
    loaded = build_model("fmnist_tiny", 10, 1, 28, pretrained=str(path))
    _assert_same_weights(loaded.state_dict(), trained)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda state: {f"module.{key}": value for key, value in state.items()},
        lambda state: {"state_dict": state, "epoch": 3},
        lambda state: {"model": {f"module.{key}": value for key, value in state.items()}},
    ],
    ids=["ddp-prefix", "state_dict-wrapper", "model-wrapper-with-prefix"],
)
def test_wrappers_and_prefixes_are_accepted(tmp_path: Path, trained: dict[str, torch.Tensor], wrap) -> None:
    path = _save(wrap(trained), tmp_path / "tiny.pt")
    _assert_same_weights(build_model("fmnist_tiny", 10, 1, 28, pretrained=path).state_dict(), trained)


def test_missing_batch_counters_are_tolerated(tmp_path: Path, trained: dict[str, torch.Tensor]) -> None:
    old_style = {key: value for key, value in trained.items() if not key.endswith("num_batches_tracked")}
    path = _save(old_style, tmp_path / "old.pt")
    loaded = build_model("fmnist_tiny", 10, 1, 28, pretrained=path)
    torch.testing.assert_close(loaded.net.block1[0].weight, trained["block1.0.weight"])


def test_torchvision_round_trip(tmp_path: Path) -> None:
    source = build_model("torchvision.mobilenet_v3_small", 10, 3, 64)
    path = _save(source.net.state_dict(), tmp_path / "mnv3.pth")
    loaded = build_model("torchvision.mobilenet_v3_small", 10, 3, 64, pretrained=path)
    _assert_same_weights(loaded.state_dict(), source.state_dict())


def test_wrong_architecture(tmp_path: Path) -> None:
    path = _save(build_model("fmnist_cnn", 10, 1, 28).state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(CheckpointError) as error:
        build_model("fmnist_mlp", 10, 1, 28, pretrained=path)
    message = str(error.value)
    assert message.startswith(f"{path}: does not fit fmnist_mlp with 10 classes")
    assert "missing keys hidden1.0.weight" in message
    assert "another architecture" in message
    assert "\n" not in message


def test_wrong_class_count(tmp_path: Path, trained: dict[str, torch.Tensor]) -> None:
    path = _save(trained, tmp_path / "tiny10.pt")
    with pytest.raises(CheckpointError) as error:
        build_model("fmnist_tiny", 5, 1, 28, pretrained=path)
    message = str(error.value)
    assert message.startswith(f"{path}: does not fit fmnist_tiny with 5 classes")
    assert "classifier.weight (10, 32) in file vs (5, 32) in model" in message
    assert "class count" in message


def test_truncated_file(tmp_path: Path, trained: dict[str, torch.Tensor]) -> None:
    path = _save(trained, tmp_path / "tiny.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        build_model("fmnist_tiny", 10, 1, 28, pretrained=path)
    message = str(error.value)
    assert message.startswith(f"{path}: cannot be read as a state dict")
    assert "truncated" in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pt"
    with pytest.raises(CheckpointError, match=r"absent\.pt: no such file"):
        build_model("fmnist_tiny", 10, 1, 28, pretrained=path)


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = _save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list\.pt: not a state dict"):
        build_model("fmnist_tiny", 10, 1, 28, pretrained=path)
