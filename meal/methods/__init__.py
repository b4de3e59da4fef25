"""Training methods (`method=` group). Each lives in one module of this package whose
:class:`~meal.methods.base.Method` subclass registers itself (:func:`~meal.methods.registry.register_method`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from meal.methods.base import ExtraOptimizer, Method, StepOutput, Teacher
from meal.methods.registry import method_class, method_classes, method_names, register_method

__all__ = [
    "ExtraOptimizer",
    "Method",
    "StepOutput",
    "Teacher",
    "build_method",
    "method_class",
    "method_classes",
    "method_names",
    "register_method",
]


def build_method(cfg: Any, student: nn.Module, teachers: Sequence[Teacher], num_classes: int, seed: int = 0) -> Method:
    """Instantiate the method named by `cfg.name` around a student and its teachers."""
    return method_class(cfg.name)(cfg, student, teachers, num_classes, seed)
