"""Declared ranges of numeric config keys.

Every numeric field of a schema dataclass is declared with :func:`ranged`, which keeps its valid
range (and finiteness) in the field's metadata, next to its default. :func:`check_ranges` walks a
composed config against its schema and refuses the first value outside its range, naming the key.
A list field's range applies to each of its elements; `None` is allowed exactly where the field's
type allows it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meal.errors import ConfigError

RANGE = "meal.range"


@dataclass(frozen=True)
class Range:
    """The values a numeric key may take: optional bounds, each inclusive or open, and finiteness."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    finite: bool = True

    def __contains__(self, value: float) -> bool:
        if math.isnan(value):
            return not self.finite
        if self.finite and math.isinf(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        """The range in words: ``> 0``, ``>= 1``, ``in [0, 1)``, or ``finite`` when unbounded."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return "finite" if self.finite else "a number"

    def check(self, key: str, value: float, nullable: bool = False) -> None:
        """Raise ConfigError naming `key` when `value` is outside the range."""
        if value in self:
            return
        wanted = self.describe()
        fix = f"set {key} to a finite value" if wanted == "finite" else f"set {key} to a value {wanted}"
        if nullable:
            fix += " or null"
        if math.isfinite(value) or wanted == "finite":
            raise ConfigError(key, f"must be {wanted}, got {value}", fix)
        raise ConfigError(key, f"must be a finite number {wanted}, got {value}", fix)


def _num(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def ranged(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    finite: bool = True,
) -> Any:
    """A dataclass field with `default` (or `factory` for lists) whose value(s) must lie in the range given.

    `ge`/`gt` give the lower bound (inclusive/open), `le`/`lt` the upper one; `finite` refuses nan and
    infinities. With no bound the key takes any finite number.
    """
    if (ge is not None and gt is not None) or (le is not None and lt is not None):
        raise ValueError("give at most one lower bound (ge or gt) and one upper bound (le or lt)")
    rng = Range(
        low=gt if gt is not None else ge,
        high=lt if lt is not None else le,
        low_open=gt is not None,
        high_open=lt is not None,
        finite=finite,
    )
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={RANGE: rng})
    return dataclasses.field(default=default, metadata={RANGE: rng})


def range_of(field: dataclasses.Field) -> Range | None:
    """The range declared on a schema field, or None for a field that is not numeric."""
    return field.metadata.get(RANGE)


def numeric_kind(hint: Any) -> tuple[type | None, bool, bool]:
    """(int or float or None, is a list, allows None) for a field's resolved type hint."""
    nullable = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        nullable = type(None) in args
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else hint
    is_list = typing.get_origin(hint) is list
    inner = typing.get_args(hint)[0] if is_list and typing.get_args(hint) else hint
    return (inner if inner in (int, float) else None), is_list, nullable


def _nested_schema(hint: Any) -> tuple[type | None, bool]:
    """(dataclass, is a list of it) for a field holding a nested schema, else (None, False)."""
    if dataclasses.is_dataclass(hint):
        return hint, False
    if typing.get_origin(hint) is list and typing.get_args(hint) and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        return typing.get_args(hint)[0], True
    return None, False


def check_ranges(node: Any, schema: type, prefix: str = "") -> None:
    """Refuse the first value of the config `node` outside the range its `schema` field declares.

    Nested schemas (a dataclass field, or a list of them) are walked too; a field typed ``Any`` is
    left to the caller (the method group, whose schema depends on ``method.name``).
    """
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        nested, many = _nested_schema(hints[field.name])
        rng = range_of(field)
        if nested is None and rng is None:
            continue  # not read: a string key may interpolate values only a running job has
        key = f"{prefix}.{field.name}" if prefix else field.name
        value = node.get(field.name) if hasattr(node, "get") else getattr(node, field.name, None)
        if value is None:
            continue
        if nested is not None:
            for i, item in enumerate(value if many else [value]):
                check_ranges(item, nested, f"{key}[{i}]" if many else key)
            continue
        _, is_list, nullable = numeric_kind(hints[field.name])
        if is_list:
            for i, item in enumerate(value):
                rng.check(f"{key}[{i}]", item)
        else:
            rng.check(key, value, nullable)
