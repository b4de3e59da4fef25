"""Architecture names -> tapped networks: the model zoo's single entry point."""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Callable, Sequence

from torch import nn

from meal.errors import ConfigError
from meal.models import cifar, small
from meal.models.pretrained import load_pretrained
from meal.models.taps import TappedModel, taps_key_for
from meal.models.torchvision_models import PREFIX, build_torchvision, default_taps

logger = logging.getLogger(__name__)

# The MEAL paper's CIFAR networks: builder(num_classes, in_channels).
CIFAR_ZOO: dict[str, Callable[[int, int], nn.Module]] = {
    "vgg19": cifar.vgg19,
    "vgg19_bn": cifar.vgg19_bn,
    "resnet18": cifar.resnet18,
    "preactresnet18": cifar.preactresnet18,
    "googlenet": cifar.googlenet,
    "densenet121": cifar.densenet121,
    "densenet_cifar": cifar.densenet_cifar,
    "resnext29_2x64d": cifar.resnext29_2x64d,
    "mobilenet": cifar.mobilenet,
    "dpn92": cifar.dpn92,
    "shufflenetg2": cifar.shufflenetg2,
}

# Small networks for 28x28 data: builder(num_classes, in_channels, image_size).
SMALL_ZOO: dict[str, Callable[[int, int, int], nn.Module]] = {
    "fmnist_cnn": small.fmnist_cnn,
    "fmnist_cnn_wide": small.fmnist_cnn_wide,
    "fmnist_cnn_large": small.fmnist_cnn_large,
    "fmnist_resnet": small.fmnist_resnet,
    "fmnist_mlp": small.fmnist_mlp,
    "fmnist_small": small.fmnist_small,
    "fmnist_tiny": small.fmnist_tiny,
}


def available_archs() -> list[str]:
    """Names of the zoo's own architectures; any ``torchvision.<name>`` classification model works too."""
    return sorted([*CIFAR_ZOO, *SMALL_ZOO])


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``) of `module`."""
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)


def _check_positive(key: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(key, f"{name} must be a positive integer, got {value!r}")


def _build_net(
    arch: str, num_classes: int, in_channels: int, image_size: int, key: str
) -> tuple[str, nn.Module, list[str] | None]:
    """Return the canonical name, the network and its default taps (None when unknown)."""
    if arch.startswith(PREFIX):
        name = arch[len(PREFIX) :]
        net = build_torchvision(name, num_classes, in_channels, image_size, key)
        return arch, net, default_taps(name, net)
    name = arch.lower()
    if name in CIFAR_ZOO:
        net = CIFAR_ZOO[name](num_classes, in_channels)
    elif name in SMALL_ZOO:
        net = SMALL_ZOO[name](num_classes, in_channels, image_size)
    else:
        raise ConfigError(
            key,
            f"unknown architecture '{arch}'",
            f"choose one of: {', '.join(available_archs())} or {PREFIX}<name>",
        )
    return name, net, list(net.default_taps)


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    pretrained: str | os.PathLike[str] | None = None,
    taps: Sequence[str] | None = None,
    key: str = "student.arch",
) -> TappedModel:
    """Build architecture `arch` as a :class:`TappedModel`.

    Args:
        arch: a zoo name (see :func:`available_archs`; case-insensitive) or ``torchvision.<name>``.
        num_classes: width of the logits.
        in_channels: channels of the input images (1 for Fashion-MNIST).
        image_size: input height = width; fixes the MLP's input layer and torchvision ViT/MaxViT sizes.
        pretrained: optional state-dict file to load (see :mod:`meal.models.pretrained`).
        taps: module names whose outputs ``forward_with_taps`` returns; None takes the
            architecture's four default stage outputs, ``[]`` returns the logits only.
        key: config key of `arch`, named in errors; the taps key is its sibling ``taps``.

    Raises:
        ConfigError: unknown architecture or tap name, or no default taps known for the model.
        CheckpointError: the `pretrained` file is missing, unreadable or does not fit.
    """
    _check_positive(key, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    name, net, defaults = _build_net(arch, num_classes, in_channels, image_size, key)
    if pretrained:
        load_pretrained(net, pretrained, name, num_classes)
    taps_key = taps_key_for(key)
    if taps is None:
        if defaults is None:
            raise ConfigError(
                taps_key,
                f"no default taps are known for {name}",
                "list 4 module names from model.named_modules()",
            )
        taps = defaults
    model = TappedModel(net, name, [str(tap) for tap in taps], taps_key)
    logger.info("built %s: %s trainable parameters, taps %s", name, f"{count_parameters(net):,}", model.tap_names)
    return model
