"""DenseNet-BC (Huang et al., 2017) for small images.

A 3x3 stem with ``2 * growth`` channels, four dense blocks of bottleneck layers
(BN-ReLU-1x1 conv to ``4 * growth``, BN-ReLU-3x3 conv to ``growth``, output concatenated to the
input), transitions (BN-ReLU-1x1 conv halving the channels, 2x2 average pooling) between blocks,
a final BN-ReLU, global average pooling and a linear classifier.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from meal.models.cifar.common import ClassifierHead


def _bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
    )


class DenseLayer(nn.Module):
    """Bottleneck layer whose `growth` new channels are appended to its input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.reduce = _bn_relu_conv(in_channels, 4 * growth, 1)
        self.conv = _bn_relu_conv(4 * growth, growth, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.reduce(x))], dim=1)


class DenseNet(nn.Sequential):
    """DenseNet with ``stem``, ``stage1`` .. ``stage4`` and ``head``.

    ``stage1`` .. ``stage3`` are a dense block and its transition; ``stage4`` is the last dense
    block and the final BN-ReLU.
    """

    default_taps = ("stage1", "stage2", "stage3", "stage4")

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        blocks: tuple[int, int, int, int] = (6, 12, 24, 16),
        growth: int = 32,
        reduction: float = 0.5,
    ) -> None:
        channels = 2 * growth
        named: OrderedDict[str, nn.Module] = OrderedDict(
            stem=nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        )
        for index, count in enumerate(blocks, start=1):
            layers: list[nn.Module] = []
            for _ in range(count):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            if index < len(blocks):
                reduced = int(channels * reduction)
                layers += [_bn_relu_conv(channels, reduced, 1), nn.AvgPool2d(2)]
                channels = reduced
            else:
                layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            named[f"stage{index}"] = nn.Sequential(*layers)
        named["head"] = ClassifierHead(channels, num_classes)
        super().__init__(named)


def densenet121(num_classes: int, in_channels: int = 3) -> DenseNet:
    """DenseNet-121: blocks (6, 12, 24, 16), growth 32."""
    return DenseNet(num_classes, in_channels, blocks=(6, 12, 24, 16), growth=32)


def densenet_cifar(num_classes: int, in_channels: int = 3) -> DenseNet:
    """The small CIFAR DenseNet: blocks (6, 12, 24, 16), growth 12."""
    return DenseNet(num_classes, in_channels, blocks=(6, 12, 24, 16), growth=12)
