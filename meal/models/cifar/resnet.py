"""ResNet-18 (He et al., 2016) and pre-activation ResNet-18 (He et al., 2016, "Identity Mappings")
for small images: a 3x3 stem without pooling, four stages of two basic blocks (64, 128, 256, 512
channels, strides 1, 2, 2, 2), global average pooling and a linear classifier.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from meal.models.cifar.common import ClassifierHead, conv_bn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut; ReLU after the sum."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_channels, channels, 3, stride)
        self.conv2 = conv_bn(channels, channels, 3, relu=False)
        self.shortcut = (
            conv_bn(in_channels, channels, 1, stride, relu=False)
            if stride != 1 or in_channels != channels
            else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice; a projection shortcut (when needed) starts from the first activation."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut = (
            nn.Conv2d(in_channels, channels, 1, stride, bias=False) if stride != 1 or in_channels != channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv1(activated)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


def _stage(block: type[nn.Module], in_channels: int, channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [block(in_channels, channels, stride)]
    layers += [block(channels, channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)


class ResNet(nn.Sequential):
    """ResNet with ``stem``, ``stage1`` .. ``stage4`` and ``head``.

    With ``pre_activation`` the stem is a bare convolution and the head starts with the final
    BN-ReLU, so every stage output is the un-normalised residual stream.
    """

    default_taps = ("stage1", "stage2", "stage3", "stage4")

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        blocks: tuple[int, int, int, int] = (2, 2, 2, 2),
        pre_activation: bool = False,
    ) -> None:
        block = PreActBlock if pre_activation else BasicBlock
        stem: nn.Module = (
            nn.Conv2d(in_channels, 64, 3, padding=1, bias=False) if pre_activation else conv_bn(in_channels, 64, 3)
        )
        named: OrderedDict[str, nn.Module] = OrderedDict(stem=stem)
        channels = 64
        for index, (width, stride, count) in enumerate(zip(STAGE_WIDTHS, STAGE_STRIDES, blocks, strict=True), start=1):
            named[f"stage{index}"] = _stage(block, channels, width, count, stride)
            channels = width
        head = ClassifierHead(channels, num_classes)
        if pre_activation:
            named["head"] = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True), head)
        else:
            named["head"] = head
        super().__init__(named)


def resnet18(num_classes: int, in_channels: int = 3) -> ResNet:
    """ResNet-18: basic blocks, post-activation."""
    return ResNet(num_classes, in_channels)


def preactresnet18(num_classes: int, in_channels: int = 3) -> ResNet:
    """Pre-activation ResNet-18."""
    return ResNet(num_classes, in_channels, pre_activation=True)
