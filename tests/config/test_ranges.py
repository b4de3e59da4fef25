"""Declared ranges: every numeric schema key has one, and a value just outside it is refused with the key's name."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import typing
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from meal.config import register, schema
from meal.config.ranges import Range, check_ranges, numeric_kind, range_of, ranged
from meal.config.validate import validate
from meal.errors import ConfigError
from meal.methods.registry import method_classes
from meal.tracking.config import LoggerConfig

CONF = Path(__file__).resolve().parents[2] / "conf"

# Where each schema sits in a composed config: (method option to compose with, key prefix).
PLACES: dict[type, tuple[str, str]] = {
    schema.MealConfig: ("ce", ""),
    schema.DataConfig: ("ce", "data"),
    schema.ModelConfig: ("ce", "student"),
    schema.TeachersConfig: ("kd", "teachers"),
    schema.TeacherMember: ("kd", "teachers.members[0]"),
    schema.TeacherTraining: ("kd", "teachers.training"),
    # every registered method's schema, composed with its own method option
    **{cls.schema: (name, "method") for name, cls in method_classes().items()},
    schema.OptimConfig: ("ce", "optim"),
    schema.ScheduleConfig: ("ce", "schedule"),
    schema.TrainerConfig: ("ce", "trainer"),
    LoggerConfig: ("ce", "logger"),
    schema.PathsConfig: ("ce", "paths"),
    schema.ClusterConfig: ("ce", "cluster"),
    schema.ResourcesConfig: ("ce", "resources"),
}


def _schemas() -> list[type]:
    found = [
        obj
        for _, obj in inspect.getmembers(schema, inspect.isclass)
        if dataclasses.is_dataclass(obj) and obj.__module__ == schema.__name__
    ]
    return [*found, *(cls.schema for cls in method_classes().values()), LoggerConfig]


def _numeric_fields(cls: type) -> list[tuple[dataclasses.Field, type, bool]]:
    hints = typing.get_type_hints(cls)
    fields = []
    for field in dataclasses.fields(cls):
        kind, is_list, _ = numeric_kind(hints[field.name])
        if kind is not None:
            fields.append((field, kind, is_list))
    return fields


def _outside(rng: Range, kind: type) -> list[float]:
    """Values just outside `rng` for a field of type `kind`."""

    def beyond(bound: float, direction: float) -> float:
        return bound + direction if kind is int else math.nextafter(bound, direction * math.inf)

    values: list[float] = []
    if rng.low is not None:
        values.append(rng.low if rng.low_open else beyond(rng.low, -1))
    if rng.high is not None:
        values.append(rng.high if rng.high_open else beyond(rng.high, 1))
    if rng.finite and kind is float:
        values += [math.nan, math.inf, -math.inf]
    return [kind(v) if kind is int else v for v in values]


def _cases() -> list[tuple[type, str, float]]:
    cases = []
    for cls, _ in PLACES.items():
        for field, kind, _ in _numeric_fields(cls):
            cases += [(cls, field.name, value) for value in _outside(range_of(field), kind)]
    return cases


@pytest.fixture(scope="module")
def configs() -> dict[str, DictConfig]:
    """One composed config per method option (teachers=fmnist_pair, so teacher members exist)."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        composed = {m: compose("config", overrides=[f"method={m}", "teachers=fmnist_pair"]) for m in method_classes()}
    GlobalHydra.instance().clear()
    return composed


def test_every_numeric_field_declares_a_range() -> None:
    undeclared = [
        f"{cls.__name__}.{field.name}"
        for cls in _schemas()
        for field, _, _ in _numeric_fields(cls)
        if range_of(field) is None
    ]
    assert undeclared == [], f"numeric schema fields without a declared range (use ranged(...)): {undeclared}"
    assert sum(len(_numeric_fields(cls)) for cls in _schemas()) >= 60


def test_every_schema_is_placed_or_mixed_into_a_placed_one() -> None:
    mixins = {base for cls in PLACES for base in cls.__mro__[1:]}
    unplaced = [cls.__name__ for cls in _schemas() if cls not in PLACES and cls not in mixins]
    assert unplaced == [], f"schemas the range test does not reach: {unplaced}"


def test_only_numeric_fields_declare_ranges() -> None:
    numeric = {(cls, f.name) for cls in _schemas() for f, _, _ in _numeric_fields(cls)}
    extra = [
        f"{cls.__name__}.{f.name}"
        for cls in _schemas()
        for f in dataclasses.fields(cls)
        if range_of(f) is not None and (cls, f.name) not in numeric
    ]
    assert extra == []


@pytest.mark.parametrize("method", list(method_classes()))
def test_defaults_lie_in_their_ranges(configs, method: str) -> None:
    check_ranges(configs[method], schema.MealConfig)
    check_ranges(configs[method].method, method_classes()[method].schema, "method")


@pytest.mark.parametrize(("cls", "name", "value"), _cases(), ids=[f"{c.__name__}.{n}={v}" for c, n, v in _cases()])
def test_a_value_just_outside_the_range_is_refused(configs, cls: type, name: str, value: float) -> None:
    method, prefix = PLACES[cls]
    cfg = copy.deepcopy(configs[method])
    key = f"{prefix}.{name}" if prefix else name
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    _, is_list, _ = numeric_kind(typing.get_type_hints(cls)[name])
    if is_list:
        current = list(OmegaConf.select(cfg, key)) or [value]
        current[0] = value
        OmegaConf.update(cfg, key, current, merge=False)
        key += "[0]"
    else:
        OmegaConf.update(cfg, key, value, merge=False)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == key
    finite = "" if math.isfinite(value) or range_of(field).describe() == "finite" else "a finite number "
    assert str(info.value).startswith(f"{key}: must be {finite}{range_of(field).describe()}, got {value}")
    assert f"set {key} to a " in str(info.value)


@pytest.mark.parametrize(
    ("rng", "inside", "outside"),
    [
        (Range(low=0), [0.0, 1e9], [-1e-12, math.nan, math.inf]),
        (Range(low=0, low_open=True), [1e-12], [0.0, -1.0]),
        (Range(low=0, high=1, high_open=True), [0.0, 0.999], [1.0, -0.1]),
        (Range(low=0, high=1), [0.0, 1.0], [1.0000001]),
        (Range(), [-1e9, 0, 7], [math.nan, -math.inf]),
        (Range(finite=False), [math.inf, math.nan], []),
    ],
)
def test_range_membership(rng: Range, inside: list[float], outside: list[float]) -> None:
    assert all(v in rng for v in inside)
    assert not any(v in rng for v in outside)


def test_range_words() -> None:
    assert Range(low=0, low_open=True).describe() == "> 0"
    assert Range(low=1).describe() == ">= 1"
    assert Range(low=0, high=1, high_open=True).describe() == "in [0, 1)"
    assert Range(high=2.5).describe() == "<= 2.5"
    assert Range().describe() == "finite"


def test_null_is_allowed_where_the_type_allows_it_and_named_in_the_fix(configs) -> None:
    cfg = copy.deepcopy(configs["ce"])
    cfg.trainer.grad_clip = None
    validate(cfg)
    cfg.trainer.grad_clip = 0.0
    with pytest.raises(
        ConfigError,
        match=r"^trainer\.grad_clip: must be > 0, got 0\.0 \(set trainer\.grad_clip "
        r"to a value > 0 or null\)$",
    ):
        validate(cfg)


def test_a_field_takes_at_most_one_bound_per_side() -> None:
    with pytest.raises(ValueError, match="at most one lower bound"):
        ranged(1.0, ge=0, gt=0)
