"""The CIFAR zoo and the small Fashion-MNIST nets: shapes, taps, gradients, parameter counts."""

from __future__ import annotations

import pytest
import torch

from meal.models import TappedModel, available_archs, build_model, count_parameters

# Tap shapes (C, H, W) of the four default taps at 32x32 input.
CIFAR_TAPS = {
    "vgg19": [(128, 8, 8), (256, 4, 4), (512, 2, 2), (512, 1, 1)],
    "vgg19_bn": [(128, 8, 8), (256, 4, 4), (512, 2, 2), (512, 1, 1)],
    "resnet18": [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)],
    "preactresnet18": [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)],
    "googlenet": [(192, 32, 32), (480, 32, 32), (832, 16, 16), (1024, 8, 8)],
    "densenet121": [(128, 16, 16), (256, 8, 8), (512, 4, 4), (1024, 4, 4)],
    "densenet_cifar": [(48, 16, 16), (96, 8, 8), (192, 4, 4), (384, 4, 4)],
    "resnext29_2x64d": [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8)],
    "mobilenet": [(128, 16, 16), (256, 8, 8), (512, 4, 4), (1024, 2, 2)],
    "dpn92": [(320, 32, 32), (672, 16, 16), (1528, 8, 8), (2560, 4, 4)],
    "shufflenetg2": [(24, 32, 32), (200, 16, 16), (400, 8, 8), (800, 4, 4)],
}

# Tap shapes of the small nets at 1x28x28 input (the MLP and the CNN hidden layers are vectors).
SMALL_TAPS = {
    "fmnist_cnn": [(24, 14, 14), (32, 7, 7), (32, 3, 3), (64,)],
    "fmnist_cnn_wide": [(16, 14, 14), (32, 7, 7), (48, 3, 3), (96,)],
    "fmnist_cnn_large": [(32, 14, 14), (64, 7, 7), (128, 3, 3), (256,)],
    "fmnist_resnet": [(16, 28, 28), (32, 14, 14), (64, 7, 7), (64,)],
    "fmnist_small": [(12, 14, 14), (24, 7, 7), (32, 3, 3), (64,)],
    "fmnist_tiny": [(8, 14, 14), (16, 7, 7), (16, 3, 3), (32,)],
    "fmnist_mlp": [(256,), (128,), (128,), (64,)],
}

# Trainable parameters with 10 classes, 3 input channels. The published CIFAR figures differ
# where the design does: VGG19-BN 20,040,522 (conv biases before BN), GoogLeNet 6,166,250
# (conv biases before BN), PreActResNet18 11,171,146 (no final BN-ReLU), ResNeXt29_2x64d
# 9,128,778 (1x1 stem). The tolerance covers those differences.
KNOWN_PARAMETERS = {
    "resnet18": 11_173_962,
    "vgg19_bn": 20_040_522,
    "vgg19": 20_029_514,
    "preactresnet18": 11_171_146,
    "googlenet": 6_166_250,
    "densenet121": 6_956_298,
    "densenet_cifar": 1_000_618,
    "mobilenet": 3_217_226,
    "resnext29_2x64d": 9_128_778,
    "dpn92": 34_236_634,
    "shufflenetg2": 887_582,
}
TOLERANCE = 0.01


def test_available_archs_lists_the_zoo() -> None:
    assert available_archs() == sorted([*CIFAR_TAPS, *SMALL_TAPS])


def _check_forward_backward(arch: str, in_channels: int, size: int, expected: list[tuple[int, ...]]) -> TappedModel:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, in_channels=in_channels, image_size=size)
    batch = torch.randn(2, in_channels, size, size)
    outputs = model.forward_with_taps(batch)
    assert len(outputs) == 5
    assert [tuple(output.shape[1:]) for output in outputs[:-1]] == expected
    assert outputs[-1].shape == (2, 10)
    sum(output.float().mean() for output in outputs).backward()
    grads = [parameter.grad for parameter in model.parameters()]
    assert all(grad is not None and torch.isfinite(grad).all() for grad in grads)
    assert model(batch).shape == (2, 10)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(CIFAR_TAPS))
def test_cifar_zoo_forward_backward_taps_and_size(arch: str) -> None:
    model = _check_forward_backward(arch, 3, 32, CIFAR_TAPS[arch])
    assert count_parameters(model) == pytest.approx(KNOWN_PARAMETERS[arch], rel=TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(CIFAR_TAPS))
def test_cifar_zoo_takes_one_channel_28px(arch: str) -> None:
    model = build_model(arch, num_classes=10, in_channels=1, image_size=28).eval()
    with torch.no_grad():
        outputs = model.forward_with_taps(torch.randn(1, 1, 28, 28))
    assert len(outputs) == 5
    assert outputs[-1].shape == (1, 10)
    assert all(output.dim() == 4 for output in outputs[:-1])


@pytest.mark.parametrize("arch", sorted(SMALL_TAPS))
def test_small_nets_forward_backward_and_taps(arch: str) -> None:
    _check_forward_backward(arch, 1, 28, SMALL_TAPS[arch])


def test_small_nets_stay_small() -> None:
    counts = {arch: count_parameters(build_model(arch, 10, 1, 28)) for arch in SMALL_TAPS}
    assert counts["fmnist_tiny"] < min(counts["fmnist_cnn"], counts["fmnist_cnn_wide"]) < 100_000
    assert counts["fmnist_mlp"] < 300_000
    # students well below every teacher of teachers=fmnist_strong
    assert (counts["fmnist_tiny"], counts["fmnist_small"]) == (8_578, 28_894)
    assert counts["fmnist_small"] < min(counts["fmnist_resnet"], counts["fmnist_cnn_large"], counts["fmnist_cnn_wide"])


def test_small_resnet_shortcuts_project_only_where_shapes_change() -> None:
    model = build_model("fmnist_resnet", 10, 1, 28).net
    assert isinstance(model.stage1.shortcut, torch.nn.Identity)
    for stage in (model.stage2, model.stage3):
        conv = stage.shortcut[0]
        assert (conv.kernel_size, conv.stride) == ((1, 1), (2, 2))
    # the block adds its input: with the residual branch's last BN zeroed, a stage is relu(x)
    with torch.no_grad():
        torch.nn.init.zeros_(model.stage1.bn2.weight)
        torch.nn.init.zeros_(model.stage1.bn2.bias)
        x = torch.randn(2, 16, 28, 28)
        assert torch.equal(model.stage1.eval()(x), torch.relu(x))


def test_arch_names_are_case_insensitive() -> None:
    model = build_model("VGG19_BN", num_classes=10, in_channels=3, image_size=32)
    assert model.arch == "vgg19_bn"
