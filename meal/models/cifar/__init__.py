"""The CIFAR model zoo of the MEAL paper, for 32x32 (and 28x28) inputs.

Every network is an ``nn.Sequential`` of named stages ending in ``head`` (global average pooling
and one linear layer), and lists its four stage outputs in ``default_taps``.
"""

from meal.models.cifar.densenet import densenet121, densenet_cifar
from meal.models.cifar.dpn import dpn92
from meal.models.cifar.googlenet import googlenet
from meal.models.cifar.mobilenet import mobilenet
from meal.models.cifar.resnet import preactresnet18, resnet18
from meal.models.cifar.resnext import resnext29_2x64d
from meal.models.cifar.shufflenet import shufflenetg2
from meal.models.cifar.vgg import vgg19, vgg19_bn

__all__ = [
    "densenet121",
    "densenet_cifar",
    "dpn92",
    "googlenet",
    "mobilenet",
    "preactresnet18",
    "resnet18",
    "resnext29_2x64d",
    "shufflenetg2",
    "vgg19",
    "vgg19_bn",
]
