"""ResNeXt-29 (Xie et al., 2017) for small images.

A 3x3 stem with 64 channels, three stages of three bottleneck blocks (strides 1, 2, 2). A block is
1x1 conv to ``cardinality * width`` channels, grouped 3x3 conv (``cardinality`` groups), 1x1 conv
to twice that, plus a shortcut; the bottleneck width doubles from stage to stage. Global average
pooling and a linear classifier close the network.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from meal.models.cifar.common import ClassifierHead, conv_bn


class ResNeXtBlock(nn.Module):
    """Grouped-convolution bottleneck with expansion 2 and a projection shortcut when needed."""

    def __init__(self, in_channels: int, cardinality: int, width: int, stride: int) -> None:
        super().__init__()
        inner = cardinality * width
        out_channels = 2 * inner
        self.body = nn.Sequential(
            conv_bn(in_channels, inner, 1),
            conv_bn(inner, inner, 3, stride, groups=cardinality),
            conv_bn(inner, out_channels, 1, relu=False),
        )
        self.shortcut = (
            conv_bn(in_channels, out_channels, 1, stride, relu=False)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNeXt(nn.Sequential):
    """ResNeXt with ``stem``, ``stage1`` .. ``stage3`` and ``head``."""

    default_taps = ("stem", "stage1", "stage2", "stage3")

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        blocks: tuple[int, ...] = (3, 3, 3),
        cardinality: int = 2,
        width: int = 64,
    ) -> None:
        named: OrderedDict[str, nn.Module] = OrderedDict(stem=conv_bn(in_channels, 64, 3))
        channels = 64
        for index, count in enumerate(blocks, start=1):
            layers = []
            for position in range(count):
                stride = 2 if index > 1 and position == 0 else 1
                block = ResNeXtBlock(channels, cardinality, width, stride)
                layers.append(block)
                channels = block.out_channels
            named[f"stage{index}"] = nn.Sequential(*layers)
            width *= 2
        named["head"] = ClassifierHead(channels, num_classes)
        super().__init__(named)


def resnext29_2x64d(num_classes: int, in_channels: int = 3) -> ResNeXt:
    """ResNeXt-29 with cardinality 2 and bottleneck width 64."""
    return ResNeXt(num_classes, in_channels, blocks=(3, 3, 3), cardinality=2, width=64)
