"""GoogLeNet (Szegedy et al., 2015) for small images.

A 3x3 stem with 192 channels and no early down-sampling, then inception stages 3 (a, b),
4 (a-e) and 5 (a, b) separated by 3x3 stride-2 max pooling. Each inception module concatenates
four branches: 1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3 (the 5x5 branch as two 3x3 layers); and
3x3 max pooling -> 1x1. Global average pooling and a linear classifier close the network.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from meal.models.cifar.common import ClassifierHead, conv_bn


class Inception(nn.Module):
    """Four parallel branches concatenated along channels."""

    def __init__(
        self,
        in_channels: int,
        out_1x1: int,
        reduce_3x3: int,
        out_3x3: int,
        reduce_5x5: int,
        out_5x5: int,
        out_pool: int,
    ) -> None:
        super().__init__()
        self.branch_1x1 = conv_bn(in_channels, out_1x1, 1)
        self.branch_3x3 = nn.Sequential(conv_bn(in_channels, reduce_3x3, 1), conv_bn(reduce_3x3, out_3x3, 3))
        self.branch_5x5 = nn.Sequential(
            conv_bn(in_channels, reduce_5x5, 1),
            conv_bn(reduce_5x5, out_5x5, 3),
            conv_bn(out_5x5, out_5x5, 3),
        )
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_bn(in_channels, out_pool, 1))
        self.out_channels = out_1x1 + out_3x3 + out_5x5 + out_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch_1x1, self.branch_3x3, self.branch_5x5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)


# (out_1x1, reduce_3x3, out_3x3, reduce_5x5, out_5x5, out_pool) per module, per stage
INCEPTION_STAGES = {
    "inception3": ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    "inception4": (
        (192, 96, 208, 16, 48, 64),
        (160, 112, 224, 24, 64, 64),
        (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64),
        (256, 160, 320, 32, 128, 128),
    ),
    "inception5": ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
}


class GoogLeNet(nn.Sequential):
    """GoogLeNet with ``stem``, ``inception3``, ``inception4``, ``inception5`` and ``head``."""

    default_taps = ("stem", "inception3", "inception4", "inception5")

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        named: OrderedDict[str, nn.Module] = OrderedDict(stem=conv_bn(in_channels, 192, 3))
        channels = 192
        for stage, configs in INCEPTION_STAGES.items():
            modules: list[nn.Module] = [] if stage == "inception3" else [nn.MaxPool2d(3, stride=2, padding=1)]
            for config in configs:
                module = Inception(channels, *config)
                modules.append(module)
                channels = module.out_channels
            named[stage] = nn.Sequential(*modules)
        named["head"] = ClassifierHead(channels, num_classes)
        super().__init__(named)


def googlenet(num_classes: int, in_channels: int = 3) -> GoogLeNet:
    """GoogLeNet for 32x32 (or 28x28) inputs."""
    return GoogLeNet(num_classes, in_channels)
