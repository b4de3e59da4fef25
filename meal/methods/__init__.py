"""Training methods (`method=` group). Each lives in one module of this package that defines
``METHOD``, the :class:`~meal.methods.base.Method` subclass named by its ``name``."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from torch import nn

from meal.errors import ConfigError
from meal.methods.base import ExtraOptimizer, Method, StepOutput, Teacher

__all__ = ["METHODS", "ExtraOptimizer", "Method", "StepOutput", "Teacher", "build_method", "method_class"]

METHODS = ("ce", "kd", "meal_v1", "meal_v2")


def method_class(name: str) -> type[Method]:
    """The Method subclass for `method.name`."""
    if name not in METHODS:
        raise ConfigError("method.name", f"unknown method '{name}'", f"choose one of: {', '.join(METHODS)}")
    return importlib.import_module(f"meal.methods.{name}").METHOD


def build_method(cfg: Any, student: nn.Module, teachers: Sequence[Teacher], num_classes: int,
                 seed: int = 0) -> Method:
    """Instantiate the method named by `cfg.name` around a student and its teachers."""
    return method_class(cfg.name)(cfg, student, teachers, num_classes, seed)
