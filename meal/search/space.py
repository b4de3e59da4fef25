"""The search space: Hydra override expressions turned into Optuna distributions, and back into overrides.

A dimension is written in Hydra's override grammar, in the sweeper's ``params:`` or on the command line:

==================================  ============================================================
``interval(0.01, 1.0)``             a float, uniform (``FloatDistribution``)
``tag(log, interval(1e-4, 0.1))``   a float, log-uniform
``tag(int, interval(8, 64))``       an integer (``IntDistribution``); ``tag(int, log, ...)`` log-uniform
``range(1, 9, 2)``                  an integer on the grid 1, 3, 5, 7 (``IntDistribution`` with a step)
``choice(1, 2, 4)`` or ``1,2,4``    one of the values (``CategoricalDistribution``)
==================================  ============================================================

Anything else (``key=value``) is passed unchanged to every trial. A float ``range`` and a choice of
lists or dicts are categorical over the values as written on the command line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from meal.errors import ConfigError

#: tags an interval or range may carry
TAGS = frozenset({"log", "int"})
_PRIMITIVE = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Dimension:
    """One searched key: its Optuna distribution and how a sampled value is written as an override.

    `key` is the override's key as written (``method.eta``, ``+trainer.foo``); it is also the Optuna
    parameter name. `choices` holds, for a categorical dimension, each choice as written on the
    command line (same order as the distribution's choices).
    """

    key: str
    distribution: BaseDistribution
    choices: tuple[str, ...] | None = None

    def override(self, value: Any) -> str:
        """The ``key=value`` override that sets this dimension to the sampled `value`."""
        if self.choices is not None:
            assert isinstance(self.distribution, CategoricalDistribution)
            return f"{self.key}={self.choices[self.distribution.to_internal_repr(value)]}"
        if isinstance(self.distribution, IntDistribution):
            return f"{self.key}={int(value)}"
        return f"{self.key}={float(value)!r}"


@dataclass(frozen=True)
class SearchSpace:
    """The searched dimensions and the overrides every trial gets unchanged."""

    dimensions: tuple[Dimension, ...]
    fixed: tuple[str, ...]

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        """``{parameter name: distribution}``, what ``study.ask`` takes."""
        return {d.key: d.distribution for d in self.dimensions}

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """A trial's command line: the fixed overrides, then one override per dimension from `params`."""
        missing = [d.key for d in self.dimensions if d.key not in params]
        if missing:
            raise KeyError(f"no value for {', '.join(missing)}")
        return [*self.fixed, *(d.override(params[d.key]) for d in self.dimensions)]

    def describe(self) -> dict[str, str]:
        """``{parameter name: distribution as JSON}``: a comparable record of the space."""
        return {d.key: distribution_to_json(d.distribution) for d in self.dimensions}


def _tags(override: Override, allowed: Iterable[str]) -> set[str]:
    sweep = override.value()
    tags = set(getattr(sweep, "tags", set()) or set())
    unknown = tags - set(allowed)
    if unknown:
        raise ConfigError(
            override.get_key_element(),
            f"unknown tag {', '.join(sorted(unknown))} in {override.input_line or override.get_value_element_as_str()}",
            f"this kind of sweep takes the tags: {', '.join(sorted(allowed)) or 'none'}",
        )
    return tags


def _whole(key: str, value: float) -> int:
    if not float(value).is_integer():
        raise ConfigError(key, f"tag(int, ...) needs whole-number bounds, not {value}", "write e.g. interval(8, 64)")
    return int(value)


def _interval(key: str, sweep: IntervalSweep, tags: set[str]) -> BaseDistribution:
    low, high = float(sweep.start), float(sweep.end)
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ConfigError(key, f"interval({sweep.start}, {sweep.end}) is empty", "write interval(low, high), low<high")
    log = "log" in tags
    if log and low <= 0:
        raise ConfigError(key, f"a log interval must start above 0, not at {sweep.start}", "raise the lower bound")
    if "int" in tags:
        return IntDistribution(_whole(key, low), _whole(key, high), log=log)
    return FloatDistribution(low, high, log=log)


def _range(key: str, override: Override, sweep: RangeSweep, tags: set[str]) -> tuple[BaseDistribution, tuple | None]:
    values = list(override.sweep_iterator())
    if not values:
        raise ConfigError(key, f"range({sweep.start}, {sweep.stop}, {sweep.step}) holds no value", "widen the range")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values) and sweep.step > 0:
        step = int(sweep.step)
        if "log" in tags and step != 1:
            raise ConfigError(key, "a log range needs step 1", "drop the step or the log tag")
        return IntDistribution(values[0], values[-1], log="log" in tags, step=step), None
    if "log" in tags:
        raise ConfigError(key, "a log range must be a rising integer range", "use tag(log, interval(low, high))")
    return CategoricalDistribution(values), tuple(override.sweep_string_iterator())


def _choice(override: Override) -> tuple[BaseDistribution, tuple[str, ...]]:
    values = list(override.sweep_iterator())
    written = tuple(override.sweep_string_iterator())
    if len(set(written)) != len(written):
        raise ConfigError(override.get_key_element(), "lists a choice twice", "give each choice once")
    if all(isinstance(v, _PRIMITIVE) for v in values) and len({repr(v) for v in values}) == len(values):
        return CategoricalDistribution(values), written
    return CategoricalDistribution(list(written)), written


def dimension(override: Override) -> Dimension:
    """The dimension a sweep override describes (``interval``, ``range``, ``choice`` or ``a,b,c``)."""
    key = override.get_key_element()
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        return Dimension(key, _interval(key, sweep, _tags(override, TAGS)))
    if isinstance(sweep, RangeSweep):
        distribution, choices = _range(key, override, sweep, _tags(override, {"log"}))
        return Dimension(key, distribution, choices)
    if isinstance(sweep, ChoiceSweep):
        _tags(override, ())
        distribution, choices = _choice(override)
        return Dimension(key, distribution, choices)
    raise ConfigError(
        key,
        f"cannot search over {override.get_value_element_as_str()}",
        "use interval(...), tag(log, interval(...)), range(...) or choice(...)",
    )


def _fixed_line(override: Override) -> str:
    return override.input_line or f"{override.get_key_element()}={override.get_value_element_as_str()}"


def parse_search_space(
    params: Mapping[str, Any] | None,
    arguments: Sequence[str],
    parser: OverridesParser | None = None,
) -> SearchSpace:
    """The search space of the sweeper's `params` (``{key: expression}``) and the command-line `arguments`.

    A key given on the command line replaces the same key in `params`. Sweep overrides become
    dimensions; the others are fixed and passed to every trial, in the order given.
    """
    parser = parser or OverridesParser.create()
    lines = [f"{key}={value}" for key, value in (params or {}).items()]
    by_key: dict[str, Override] = {}
    for override in parser.parse_overrides([*lines, *arguments]):
        by_key.pop(override.key_or_group, None)  # re-inserted last: command-line order after params
        by_key[override.key_or_group] = override
    dimensions = tuple(dimension(o) for o in by_key.values() if o.is_sweep_override())
    fixed = tuple(_fixed_line(o) for o in by_key.values() if not o.is_sweep_override())
    return SearchSpace(dimensions, fixed)
