"""MobileNet v1 (Howard et al., 2017) for small images.

A 3x3 stem with 32 channels (stride 1), then depthwise-separable blocks (3x3 depthwise conv-BN-ReLU,
1x1 pointwise conv-BN-ReLU) with widths 64, 128/2, 128, 256/2, 256, 512/2, 5 x 512, 1024/2, 1024
(``/2``: stride 2), global average pooling and a linear classifier.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from meal.models.cifar.common import ClassifierHead, conv_bn

# (width, stride) of the separable blocks, per stage
MOBILENET_STAGES = (
    ((64, 1), (128, 2), (128, 1)),
    ((256, 2), (256, 1)),
    ((512, 2), *((512, 1),) * 5),
    ((1024, 2), (1024, 1)),
)


def separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 conv-BN-ReLU then pointwise 1x1 conv-BN-ReLU."""
    return nn.Sequential(
        conv_bn(in_channels, in_channels, 3, stride, groups=in_channels),
        conv_bn(in_channels, out_channels, 1),
    )


class MobileNet(nn.Sequential):
    """MobileNet v1 with ``stem``, ``stage1`` .. ``stage4`` (split at each down-sampling) and ``head``."""

    default_taps = ("stage1", "stage2", "stage3", "stage4")

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        named: OrderedDict[str, nn.Module] = OrderedDict(stem=conv_bn(in_channels, 32, 3))
        channels = 32
        for index, blocks in enumerate(MOBILENET_STAGES, start=1):
            layers = []
            for width, stride in blocks:
                layers.append(separable(channels, width, stride))
                channels = width
            named[f"stage{index}"] = nn.Sequential(*layers)
        named["head"] = ClassifierHead(channels, num_classes)
        super().__init__(named)


def mobilenet(num_classes: int, in_channels: int = 3) -> MobileNet:
    """MobileNet v1, width multiplier 1."""
    return MobileNet(num_classes, in_channels)
