"""The model zoo: CIFAR networks of the MEAL paper, small Fashion-MNIST networks and any
torchvision classification model, each wrapped as a :class:`TappedModel` exposing block outputs.

``build_model(arch, num_classes, in_channels, image_size, pretrained=None, taps=None,
key="student.arch")`` is the entry point; ``TappedModel.state_dict()`` is the plain network's
state dict, so checkpoints load into unwrapped networks and vice versa.
"""

from meal.models.registry import available_archs, build_model, count_parameters
from meal.models.taps import TappedModel

__all__ = ["TappedModel", "available_archs", "build_model", "count_parameters"]
