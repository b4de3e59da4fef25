"""ShuffleNet v1 with 2 groups (Zhang et al., 2018) for small images.

A 1x1 stem with 24 channels, three stages (4, 8, 4 units; 200, 400, 800 output channels). A unit
is grouped 1x1 conv to a quarter of its output width, channel shuffle, 3x3 depthwise conv, grouped
1x1 conv. The first unit of a stage has stride 2 and concatenates a 3x3 average-pooled shortcut
(so its branch makes ``out - in`` channels); the others add an identity shortcut. The first
1x1 conv of the network's first unit is not grouped (its input has only 24 channels).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from meal.models.cifar.common import ClassifierHead, conv_bn


class ChannelShuffle(nn.Module):
    """Interleave the channels of `groups` groups so the next grouped conv sees all of them."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        x = x.view(batch, self.groups, channels // self.groups, height, width)
        return x.transpose(1, 2).reshape(batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """One ShuffleNet unit; stride 2 concatenates the pooled input, stride 1 adds it."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int, group_first: bool) -> None:
        super().__init__()
        branch = out_channels - in_channels if stride == 2 else out_channels
        mid = branch // 4
        first_groups = groups if group_first else 1
        self.body = nn.Sequential(
            conv_bn(in_channels, mid, 1, groups=first_groups),
            ChannelShuffle(first_groups),
            conv_bn(mid, mid, 3, stride, groups=mid, relu=False),
            conv_bn(mid, branch, 1, groups=groups, relu=False),
        )
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.shortcut is None:
            return self.relu(out + x)
        return self.relu(torch.cat([out, self.shortcut(x)], dim=1))


class ShuffleNet(nn.Sequential):
    """ShuffleNet with ``stem``, ``stage1`` .. ``stage3`` and ``head``."""

    default_taps = ("stem", "stage1", "stage2", "stage3")

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: tuple[int, ...] = (200, 400, 800),
        blocks: tuple[int, ...] = (4, 8, 4),
        groups: int = 2,
    ) -> None:
        named: OrderedDict[str, nn.Module] = OrderedDict(stem=conv_bn(in_channels, 24, 1))
        channels = 24
        for index, (width, count) in enumerate(zip(widths, blocks, strict=True), start=1):
            units = []
            for position in range(count):
                first = position == 0
                group_first = not (index == 1 and first)
                units.append(ShuffleUnit(channels, width, 2 if first else 1, groups, group_first))
                channels = width
            named[f"stage{index}"] = nn.Sequential(*units)
        named["head"] = ClassifierHead(channels, num_classes)
        super().__init__(named)


def shufflenetg2(num_classes: int, in_channels: int = 3) -> ShuffleNet:
    """ShuffleNet v1 with 2 groups, widths 200/400/800."""
    return ShuffleNet(num_classes, in_channels, groups=2)
