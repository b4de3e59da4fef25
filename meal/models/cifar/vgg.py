"""VGG-19 for small images (Simonyan & Zisserman, 2015), with or without BatchNorm.

Five stages of 3x3 convolutions (64, 128, 256, 512, 512 channels; 2, 2, 4, 4, 4 layers), each
closed by 2x2 max pooling, then global average pooling and a single linear classifier.
Pooling rounds up, so 28x28 inputs work as well as 32x32.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from meal.models.cifar.common import ClassifierHead, conv_bn

VGG19_STAGES = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)


def _conv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))


class VGG(nn.Sequential):
    """VGG with named stages ``stage1`` .. ``stage5`` and a ``head``."""

    default_taps = ("stage2", "stage3", "stage4", "stage5")

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        stages: tuple[tuple[int, ...], ...] = VGG19_STAGES,
        batch_norm: bool = True,
    ) -> None:
        named: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for index, widths in enumerate(stages, start=1):
            layers: list[nn.Module] = []
            for width in widths:
                layers.append(conv_bn(channels, width, 3) if batch_norm else _conv_relu(channels, width))
                channels = width
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            named[f"stage{index}"] = nn.Sequential(*layers)
        named["head"] = ClassifierHead(channels, num_classes)
        super().__init__(named)


def vgg19(num_classes: int, in_channels: int = 3) -> VGG:
    """VGG-19 without BatchNorm (convolutions with bias)."""
    return VGG(num_classes, in_channels, batch_norm=False)


def vgg19_bn(num_classes: int, in_channels: int = 3) -> VGG:
    """VGG-19 with BatchNorm after every convolution."""
    return VGG(num_classes, in_channels, batch_norm=True)
