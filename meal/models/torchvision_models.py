"""Torchvision classification models by name, with default taps per model family.

``torchvision.<name>`` builds ``torchvision.models.get_model(name, weights=None,
num_classes=...)``; with ``in_channels != 3`` the first convolution is replaced by one with the
same settings and the requested input channels. Default taps are four stage outputs (at four
successive resolutions for CNNs), taken from a small table keyed by the name's family.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

from meal.errors import ConfigError

PREFIX = "torchvision."
LIST_COMMAND = "python -c 'import torchvision; print(torchvision.models.list_models(module=torchvision.models))'"


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models (without the ``torchvision.`` prefix)."""
    import torchvision  # imported on first use: it doubles the start-up time of every run otherwise

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _vgg_taps(net: nn.Module) -> list[str]:
    features: Any = net.get_submodule("features")
    pools = [f"features.{index}" for index, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
    return pools[-4:]


def _efficientnet_taps(net: nn.Module) -> list[str]:
    last = len(net.get_submodule("features")) - 1
    return ["features.2", "features.3", "features.5", f"features.{last}"]


def _vit_taps(net: nn.Module) -> list[str]:
    depth = len(net.get_submodule("encoder.layers"))
    return [f"encoder.layers.encoder_layer_{depth * quarter // 4 - 1}" for quarter in range(1, 5)]


def _fixed(*names: str) -> Callable[[nn.Module], list[str]]:
    return lambda net: list(names)


# (name prefix, default taps); the first matching prefix wins.
FAMILY_TAPS: tuple[tuple[str, Callable[[nn.Module], list[str]]], ...] = (
    ("resnet", _fixed("layer1", "layer2", "layer3", "layer4")),
    ("resnext", _fixed("layer1", "layer2", "layer3", "layer4")),
    ("wide_resnet", _fixed("layer1", "layer2", "layer3", "layer4")),
    ("vgg", _vgg_taps),
    ("densenet", _fixed(*(f"features.denseblock{index}" for index in range(1, 5)))),
    ("mobilenet_v2", _fixed("features.3", "features.6", "features.13", "features.18")),
    ("mobilenet_v3_large", _fixed("features.3", "features.6", "features.12", "features.16")),
    ("mobilenet_v3_small", _fixed("features.1", "features.3", "features.8", "features.12")),
    ("efficientnet", _efficientnet_taps),
    ("convnext", _fixed("features.1", "features.3", "features.5", "features.7")),
    ("regnet", _fixed(*(f"trunk_output.block{index}" for index in range(1, 5)))),
    ("shufflenet_v2", _fixed("maxpool", "stage2", "stage3", "conv5")),
    ("squeezenet1_0", _fixed("features.1", "features.5", "features.10", "features.12")),
    ("squeezenet1_1", _fixed("features.1", "features.4", "features.7", "features.12")),
    ("mnasnet", _fixed("layers.8", "layers.9", "layers.11", "layers.16")),
    ("alexnet", _fixed("features.1", "features.4", "features.11", "features.12")),
    ("googlenet", _fixed("conv3", "inception3b", "inception4e", "inception5b")),
    ("inception_v3", _fixed("Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c")),
    ("swin", _fixed("features.1", "features.3", "features.5", "features.7")),
    ("maxvit", _fixed("blocks.0", "blocks.1", "blocks.2", "blocks.3")),
    ("vit", _vit_taps),
)


def default_taps(name: str, net: nn.Module) -> list[str] | None:
    """Default tap names for torchvision model `name`, or None when its family is not in the table.

    An unknown family whose ``features`` is an ``nn.Sequential`` of at least four modules gets
    that container's last four children.
    """
    for prefix, taps in FAMILY_TAPS:
        if name.startswith(prefix):
            return taps(net)
    features = getattr(net, "features", None)
    if isinstance(features, nn.Sequential) and len(features) >= 4:
        return [f"features.{child}" for child, _ in list(features.named_children())[-4:]]
    return None


def _constructor_kwargs(name: str, image_size: int) -> dict[str, Any]:
    """Constructor arguments some families need: input size, no auxiliary heads."""
    if name.startswith("vit"):
        return {"image_size": image_size}
    if name.startswith("maxvit"):
        return {"input_size": (image_size, image_size)}
    if name in ("googlenet", "inception_v3"):
        return {"aux_logits": False, "init_weights": True}
    return {}


def _adapt_first_conv(net: nn.Module, in_channels: int, name: str, key: str) -> None:
    """Replace the first ``Conv2d`` (which must take 3 channels) by one taking `in_channels`."""
    for module_name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels != 3 or module.groups != 1:
                break
            replacement = nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            parent_name, _, attribute = module_name.rpartition(".")
            setattr(net.get_submodule(parent_name), attribute, replacement)
            return
    raise ConfigError(
        key,
        f"cannot adapt the input layer of {PREFIX}{name} to {in_channels} channels",
        "use 3-channel inputs or another architecture",
    )


def build_torchvision(name: str, num_classes: int, in_channels: int, image_size: int, key: str) -> nn.Module:
    """Build torchvision model `name` (no ``torchvision.`` prefix) with random weights."""
    names = torchvision_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        suggestion = f"did you mean {', '.join(PREFIX + match for match in close)}? " if close else ""
        raise ConfigError(key, f"unknown torchvision model '{name}'", f"{suggestion}list them: {LIST_COMMAND}")
    import torchvision

    try:
        net = torchvision.models.get_model(
            name, weights=None, num_classes=num_classes, **_constructor_kwargs(name, image_size)
        )
    except (ValueError, TypeError, RuntimeError, AssertionError) as exc:
        raise ConfigError(
            key,
            f"{PREFIX}{name} cannot be built for {image_size}px inputs: {str(exc).strip().splitlines()[0]}",
            "choose another model or image size",
        ) from exc
    if in_channels != 3:
        _adapt_first_conv(net, in_channels, name, key)
    return net
