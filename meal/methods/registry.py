"""The method registry: every training method, found by name.

A method is one module of :mod:`meal.methods` whose :class:`~meal.methods.base.Method` subclass is
decorated with :func:`register_method`. The class declares everything the rest of meal needs to know
about it (its name, its config schema, what it uses and supports, its checks), so the config store,
validation, the soft-label CLI, the benchmark and the tests ask this registry instead of listing
method names. Adding a method is one module here plus one yaml in ``conf/method/``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import TYPE_CHECKING, TypeVar

from meal.errors import ConfigError

if TYPE_CHECKING:
    from meal.methods.base import Method

M = TypeVar("M", bound="type[Method]")

_METHODS: dict[str, type[Method]] = {}
_discovered = False
#: modules of this package that hold shared pieces, not methods
_NOT_METHODS = frozenset({"base", "registry", "adversarial", "components"})


def register_method(cls: M) -> M:
    """Class decorator: add a Method subclass to the registry under its ``name``.

    The class must set ``name`` and ``schema`` (a dataclass whose ``name`` field defaults to ``name``).
    """
    name = getattr(cls, "name", None)
    schema = getattr(cls, "schema", None)
    if not isinstance(name, str) or not name or name == "base":
        raise TypeError(f"{cls.__qualname__}: set the class attribute `name` to the method's name")
    if schema is None or not dataclasses.is_dataclass(schema):
        raise TypeError(f"{cls.__qualname__}: set the class attribute `schema` to the method's config dataclass")
    declared = {f.name: f.default for f in dataclasses.fields(schema)}.get("name")
    if declared != name:
        raise TypeError(f"{schema.__qualname__}.name defaults to {declared!r}, not the method's name {name!r}")
    if name in _METHODS and _METHODS[name] is not cls:
        raise TypeError(f"method {name!r} is registered twice: {_METHODS[name].__qualname__} and {cls.__qualname__}")
    _METHODS[name] = cls
    return cls


def _discover() -> None:
    """Import every method module of this package once (each registers its class)."""
    global _discovered
    if _discovered:
        return
    import meal.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in _NOT_METHODS and not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")
    _discovered = True


def method_names() -> tuple[str, ...]:
    """The registered methods' names, sorted."""
    _discover()
    return tuple(sorted(_METHODS))


def method_class(name: str) -> type[Method]:
    """The Method subclass registered as `name` (ConfigError naming method.name when there is none)."""
    _discover()
    if name not in _METHODS:
        raise ConfigError("method.name", f"unknown method '{name}'", f"choose one of: {', '.join(method_names())}")
    return _METHODS[name]


def method_classes() -> dict[str, type[Method]]:
    """Every registered method by name."""
    _discover()
    return dict(sorted(_METHODS.items()))
