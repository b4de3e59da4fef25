"""Torchvision models by name: default taps per family, 1-channel inputs, name errors."""

from __future__ import annotations

import pytest
import torch

from meal.errors import ConfigError
from meal.models import TappedModel, build_model


def _tap_shapes(model: TappedModel, in_channels: int, size: int, backward: bool = False) -> list[tuple[int, ...]]:
    if not backward:
        model.eval()
    with torch.set_grad_enabled(backward):
        outputs = model.forward_with_taps(torch.randn(2, in_channels, size, size))
    if backward:
        outputs[-1].sum().backward()
        assert all(parameter.grad is not None for parameter in model.parameters())
    assert outputs[-1].shape == (2, 10)
    return [tuple(output.shape[1:]) for output in outputs[:-1]]


def test_resnet18_taps_at_64px() -> None:
    model = build_model("torchvision.resnet18", 10, 3, 64)
    assert model.tap_names == ["layer1", "layer2", "layer3", "layer4"]
    assert model.arch == "torchvision.resnet18"
    shapes = _tap_shapes(model, 3, 64, backward=True)
    assert shapes == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]


def test_one_input_channel() -> None:
    model = build_model("torchvision.resnet18", 10, 1, 64)
    assert model.net.conv1.in_channels == 1
    assert _tap_shapes(model, 1, 64) == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]


def test_densenet_default_taps() -> None:
    model = build_model("torchvision.densenet121", 10, 3, 64)
    assert model.tap_names == [f"features.denseblock{index}" for index in range(1, 5)]
    assert _tap_shapes(model, 3, 64) == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (1024, 2, 2)]


def test_mobilenet_default_taps_with_one_channel() -> None:
    model = build_model("torchvision.mobilenet_v3_small", 10, 1, 64)
    assert _tap_shapes(model, 1, 64) == [(16, 16, 16), (24, 8, 8), (48, 4, 4), (576, 2, 2)]


@pytest.mark.parametrize(
    "name",
    ["mobilenet_v2", "efficientnet_b0", "regnet_x_400mf", "shufflenet_v2_x0_5", "squeezenet1_1", "mnasnet0_5"],
)
def test_family_taps_are_four_successive_resolutions(name: str) -> None:
    shapes = _tap_shapes(build_model(f"torchvision.{name}", 10, 3, 64), 3, 64)
    sizes = [shape[-1] for shape in shapes]
    assert len(shapes) == 4
    assert all(len(shape) == 3 for shape in shapes)
    assert sizes == sorted(sizes, reverse=True)
    assert len(set(sizes)) == 4


def test_unknown_torchvision_name_suggests_close_names() -> None:
    with pytest.raises(ConfigError) as error:
        build_model("torchvision.resnet5", 10, 3, 64, key="teachers.members.1.arch")
    message = str(error.value)
    assert message.startswith("teachers.members.1.arch: unknown torchvision model 'resnet5'")
    assert "torchvision.resnet50" in message
    assert "list_models" in message


def test_unknown_tap_on_torchvision_model() -> None:
    with pytest.raises(ConfigError, match=r"^student\.taps: no module named 'layer5' in torchvision\.resnet18"):
        build_model("torchvision.resnet18", 10, 3, 64, taps=["layer5"])
