"""Config schemas, resolvers and cross-field validation."""

from __future__ import annotations

from omegaconf import OmegaConf

from meal.config.schema import register_schemas


def register() -> None:
    """Register schemas and custom resolvers (safe to call more than once).

    Method schemas come from the method registry (:mod:`meal.methods.registry`).
    """
    from meal.methods.registry import method_classes

    register_schemas({name: cls.schema for name, cls in method_classes().items()})
    if not OmegaConf.has_resolver("meal.mul"):
        OmegaConf.register_new_resolver("meal.mul", lambda a, b: a * b)
    if not OmegaConf.has_resolver("meal.none_if_zero"):
        OmegaConf.register_new_resolver("meal.none_if_zero", lambda v: v if v else None)
    if not OmegaConf.has_resolver("meal.first"):
        OmegaConf.register_new_resolver("meal.first", lambda *values: next((v for v in values if v), None))
    if not OmegaConf.has_resolver("meal.join"):
        OmegaConf.register_new_resolver("meal.join", lambda items, sep="-": sep.join(str(i) for i in items))
