"""DPN-92, dual path network (Chen et al., 2017), for small images.

A 3x3 stem with 64 channels, four stages (3, 4, 20, 3 blocks; strides 1, 2, 2, 2). Each block is
1x1 conv, grouped 3x3 conv (32 groups), 1x1 conv to ``residual + dense`` channels; its first
``residual`` channels are added to the residual path and the remaining ``dense`` channels are
appended to the densely connected path. Global average pooling and a linear classifier close it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from meal.models.cifar.common import ClassifierHead, conv_bn


class DualPathBlock(nn.Module):
    """One dual-path bottleneck; the first block of a stage projects its input."""

    def __init__(self, in_channels: int, width: int, residual: int, dense: int, stride: int, project: bool) -> None:
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(
            conv_bn(in_channels, width, 1),
            conv_bn(width, width, 3, stride, groups=32),
            conv_bn(width, residual + dense, 1, relu=False),
        )
        self.shortcut = conv_bn(in_channels, residual + dense, 1, stride, relu=False) if project else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.body(x)
        old = self.shortcut(x)
        r = self.residual
        return self.relu(torch.cat([old[:, :r] + new[:, :r], old[:, r:], new[:, r:]], dim=1))


# (bottleneck width, residual channels, dense increment, blocks, stride) per stage
DPN92_STAGES = (
    (96, 256, 16, 3, 1),
    (192, 512, 32, 4, 2),
    (384, 1024, 24, 20, 2),
    (768, 2048, 128, 3, 2),
)


class DPN(nn.Sequential):
    """DPN with ``stem``, ``stage1`` .. ``stage4`` and ``head``."""

    default_taps = ("stage1", "stage2", "stage3", "stage4")

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        stages: tuple[tuple[int, int, int, int, int], ...] = DPN92_STAGES,
    ) -> None:
        named: OrderedDict[str, nn.Module] = OrderedDict(stem=conv_bn(in_channels, 64, 3))
        channels = 64
        for index, (width, residual, dense, count, stride) in enumerate(stages, start=1):
            layers = []
            for position in range(count):
                first = position == 0
                layers.append(DualPathBlock(channels, width, residual, dense, stride if first else 1, first))
                channels = residual + (position + 2) * dense
            named[f"stage{index}"] = nn.Sequential(*layers)
        named["head"] = ClassifierHead(channels, num_classes)
        super().__init__(named)


def dpn92(num_classes: int, in_channels: int = 3) -> DPN:
    """DPN-92."""
    return DPN(num_classes, in_channels)
