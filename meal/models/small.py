"""Small, fast networks for 28x28 single-channel data such as Fashion-MNIST.

Plain CNNs of several sizes (``fmnist_tiny`` and ``fmnist_small`` as students; ``fmnist_cnn``,
``fmnist_cnn_wide`` and ``fmnist_cnn_large`` as teachers), a small residual network
(``fmnist_resnet``) and an MLP (``fmnist_mlp``). Each exposes four taps: the CNNs their three conv
blocks and the hidden fully connected layer, the ResNet its three stages and the pooled features,
the MLP its four hidden layers.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

# CNN heads pool the last feature map to this fixed size, so any input resolution works.
HEAD_GRID = 3


def _conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Sequential):
    """Three conv-BN-ReLU-maxpool blocks, a hidden linear layer and the classifier.

    Modules: ``block1`` .. ``block3``, ``hidden`` (pool to 3x3, flatten, linear, ReLU) and
    ``classifier``.
    """

    default_taps = ("block1", "block2", "block3", "hidden")

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        widths: tuple[int, int, int],
        kernel_sizes: tuple[int, int, int],
        hidden: int,
    ) -> None:
        named: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for index, (width, kernel_size) in enumerate(zip(widths, kernel_sizes, strict=True), start=1):
            named[f"block{index}"] = _conv_block(channels, width, kernel_size)
            channels = width
        named["hidden"] = nn.Sequential(
            nn.AdaptiveAvgPool2d(HEAD_GRID),
            nn.Flatten(),
            nn.Linear(channels * HEAD_GRID * HEAD_GRID, hidden),
            nn.ReLU(inplace=True),
        )
        named["classifier"] = nn.Linear(hidden, num_classes)
        super().__init__(named)


class SmallMLP(nn.Sequential):
    """Flatten, four hidden linear-ReLU layers (``hidden1`` .. ``hidden4``), ``classifier``.

    No normalisation layers, so any batch size (even 1) trains.
    """

    default_taps = ("hidden1", "hidden2", "hidden3", "hidden4")

    def __init__(self, num_classes: int, in_channels: int, image_size: int, widths: tuple[int, int, int, int]) -> None:
        named: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        features = in_channels * image_size * image_size
        for index, width in enumerate(widths, start=1):
            named[f"hidden{index}"] = nn.Sequential(nn.Linear(features, width), nn.ReLU(inplace=True))
            features = width
        named["classifier"] = nn.Linear(features, num_classes)
        super().__init__(named)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Sequential):
    """A conv-BN-ReLU stem, three one-block stages (the last two halve the resolution), pooling, classifier.

    Modules: ``stem``, ``stage1`` .. ``stage3``, ``pool`` (global average pool, flatten) and ``classifier``.
    """

    default_taps = ("stage1", "stage2", "stage3", "pool")

    def __init__(self, num_classes: int, in_channels: int, widths: tuple[int, int, int]) -> None:
        named: OrderedDict[str, nn.Module] = OrderedDict(
            stem=nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
            )
        )
        channels = widths[0]
        for index, width in enumerate(widths, start=1):
            named[f"stage{index}"] = BasicBlock(channels, width, stride=1 if index == 1 else 2)
            channels = width
        named["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        named["classifier"] = nn.Linear(channels, num_classes)
        super().__init__(named)


def fmnist_cnn(num_classes: int, in_channels: int = 1, image_size: int = 28) -> SmallCNN:
    """3x3 CNN with 24, 32, 32 channels and a 64-unit hidden layer (a teacher)."""
    return SmallCNN(num_classes, in_channels, widths=(24, 32, 32), kernel_sizes=(3, 3, 3), hidden=64)


def fmnist_cnn_wide(num_classes: int, in_channels: int = 1, image_size: int = 28) -> SmallCNN:
    """CNN with a 5x5 first layer, 16, 32, 48 channels and a 96-unit hidden layer (a teacher)."""
    return SmallCNN(num_classes, in_channels, widths=(16, 32, 48), kernel_sizes=(5, 3, 3), hidden=96)


def fmnist_cnn_large(num_classes: int, in_channels: int = 1, image_size: int = 28) -> SmallCNN:
    """3x3 CNN with 32, 64, 128 channels and a 256-unit hidden layer (a strong teacher)."""
    return SmallCNN(num_classes, in_channels, widths=(32, 64, 128), kernel_sizes=(3, 3, 3), hidden=256)


def fmnist_resnet(num_classes: int, in_channels: int = 1, image_size: int = 28) -> SmallResNet:
    """Residual network with 16, 32, 64 channels, one basic block per stage (a strong teacher)."""
    return SmallResNet(num_classes, in_channels, widths=(16, 32, 64))


def fmnist_small(num_classes: int, in_channels: int = 1, image_size: int = 28) -> SmallCNN:
    """3x3 CNN with 12, 24, 32 channels and a 64-unit hidden layer (a mid-size student)."""
    return SmallCNN(num_classes, in_channels, widths=(12, 24, 32), kernel_sizes=(3, 3, 3), hidden=64)


def fmnist_tiny(num_classes: int, in_channels: int = 1, image_size: int = 28) -> SmallCNN:
    """3x3 CNN with 8, 16, 16 channels and a 32-unit hidden layer (a student)."""
    return SmallCNN(num_classes, in_channels, widths=(8, 16, 16), kernel_sizes=(3, 3, 3), hidden=32)


def fmnist_mlp(num_classes: int, in_channels: int = 1, image_size: int = 28) -> SmallMLP:
    """MLP with hidden widths 256, 128, 128, 64 (a teacher)."""
    return SmallMLP(num_classes, in_channels, image_size, widths=(256, 128, 128, 64))
