"""Choice keys: every config key with a fixed set of allowed values is typed in its schema with a
:class:`~meal.core.choice.Choice` (an Enum named as its values), so a value outside the set fails while the
config is composed (a command-line override or a yaml file), in one line naming the key and the values.

The keys are found by walking the schemas, so a choice key added later is covered without a new test row.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import types
import typing
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from meal.config import register
from meal.config.schema import MealConfig, schema_default
from meal.core.choice import Choice
from meal.entry import error_line
from meal.methods.components import Pool, Similarity, TeacherSelection
from meal.methods.registry import method_classes

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
ARCHIVED_CONFIGS = sorted((REPO / "experiments" / "results").rglob(".hydra/config.yaml"))


def _enum_of(hint: Any) -> type[Enum] | None:
    """The Enum a field is typed with (also when it may be null), or None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else None
    return hint if isinstance(hint, type) and issubclass(hint, Enum) else None


def _list_item_schema(hint: Any) -> type | None:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list and args and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def choice_keys(schema: type, prefix: str = "") -> Iterator[tuple[str, type[Enum]]]:
    """``(dotted key, its Enum)`` for every Enum-typed field of `schema` and of the schemas nested in it."""
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        key, hint = f"{prefix}{field.name}", hints[field.name]
        enum = _enum_of(hint)
        if enum is not None:
            yield key, enum
        elif dataclasses.is_dataclass(hint):
            yield from choice_keys(hint, f"{key}.")
        elif (item := _list_item_schema(hint)) is not None:
            inside = list(choice_keys(item, f"{key}[0]."))
            assert inside == [], f"choice keys inside the list {key} are not covered by these tests: {inside}"


def _cases() -> list[tuple[str, str, type[Enum]]]:
    """``(method to compose with, key, Enum)``: the groups' keys once, each method's keys with that method."""
    cases = [("ce", key, enum) for key, enum in choice_keys(MealConfig)]
    for name, cls in sorted(method_classes().items()):
        cases += [(name, key, enum) for key, enum in choice_keys(cls.schema, "method.")]
    return cases


CASES = _cases()
IDS = [f"{method}:{key}" if key.startswith("method.") else key for method, key, _ in CASES]


def _all_choice_types() -> set[type[Choice]]:
    found: set[type[Choice]] = set()
    todo = list(Choice.__subclasses__())
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return found


@pytest.fixture(scope="module")
def hydra_conf() -> Iterator[None]:
    """Hydra initialised on conf/ for the module's compositions."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        yield
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def composed(hydra_conf: None) -> dict[str, DictConfig]:
    """Each method's composed config (the others' groups at their defaults), composed once."""
    return {name: compose("config", overrides=[f"method={name}"]) for name in method_classes()}


def _refusal(key: str, value: str, enum: type[Enum]) -> str:
    return f"{key}: '{value}' is not a valid choice (choose one of: {', '.join(m.value for m in enum)})"


def test_the_schemas_have_choice_keys_in_every_group_that_has_one() -> None:
    keys = {key for _, key, _ in CASES}
    expected = {
        "data.augment",
        "teachers.training.optim",
        "teachers.training.schedule",
        "optim.name",
        "schedule.name",
        "trainer.precision",
        "trainer.teacher_precision",
        "trainer.objective",
        "trainer.progress",
        "trainer.nonfinite",
        "logger.name",
        "logger.mode",
        "method.adversarial",
        "method.d_optim",
        "method.d_schedule",
        "method.similarity",
        "method.pool",
        "method.teacher_selection",
        "method.loss",
        "method.soft_labels",
        "method.cache_dtype",
    }
    assert expected <= keys, f"not typed as choices: {expected - keys}"


def test_every_choice_type_names_its_members_as_their_values() -> None:
    for cls in _all_choice_types():
        for member in cls:
            assert member.name == member.value, f"{cls.__name__}.{member.name} = {member.value!r}"
            assert str(member) == f"{member}" == f"{member:>1}" == member.value
            assert repr(member) == repr(member.value)
            record = logging.LogRecord("meal", logging.INFO, __file__, 0, "%s %r", (member, member), None)
            assert record.getMessage() == f"{member.value} {member.value!r}"  # a log line shows the value
            assert member == member.value and hash(member) == hash(member.value)
            assert json.dumps(member) == json.dumps(member.value)
        assert cls.values() == tuple(m.value for m in cls)


@pytest.mark.parametrize(("method", "key", "enum"), CASES, ids=IDS)
def test_a_bad_choice_fails_at_composition_naming_the_key_and_the_values(
    hydra_conf: None, method: str, key: str, enum: type[Enum]
) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose("config", overrides=[f"method={method}", f"{key}=bogus"])
    assert error_line(info.value) == _refusal(key, "bogus", enum)


@pytest.mark.parametrize(("method", "key", "enum"), CASES, ids=IDS)
def test_every_member_composes_and_reads_back_as_its_plain_value(
    composed: dict[str, DictConfig], method: str, key: str, enum: type[Enum]
) -> None:
    default = OmegaConf.select(composed[method], key)
    assert isinstance(default, enum), f"{key} composed to {type(default).__name__}, not {enum.__name__}"
    for value in (m.value for m in enum):
        cfg = copy.deepcopy(composed[method])
        OmegaConf.update(cfg, key, value, merge=True)  # what Hydra does with the override key=value
        got = OmegaConf.select(cfg, key)
        assert got is enum[value] and got == value and f"{got}" == value
        for written in (  # what a run directory, W&B and a yaml file record: the plain string
            OmegaConf.to_container(cfg, enum_to_str=True),
            yaml.safe_load(OmegaConf.to_yaml(cfg)),
        ):
            found = OmegaConf.select(OmegaConf.create(written), key)
            assert type(found) is str and found == value


def test_a_bad_choice_in_a_yaml_file_names_the_key_and_the_file(hydra_conf: None, tmp_path: Path) -> None:
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "bad.yaml").write_text(
        "defaults:\n  - /schema/method/meal_v2@_here_\n  - _self_\nloss: mse\n"
    )
    with pytest.raises(ConfigCompositionException) as info:
        compose("config", overrides=[f"hydra.searchpath=[file://{tmp_path}]", "method=bad"])
    line = error_line(info.value)
    assert line == "method.loss: 'mse' is not a valid choice (choose one of: ce, kl) (set in config 'method/bad')"


def test_an_optimizer_the_discriminators_once_built_silently_is_refused(hydra_conf: None) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose("config", overrides=["method=meal_v1", "method.d_optim=adam"])
    assert error_line(info.value) == "method.d_optim: 'adam' is not a valid choice (choose one of: sgd, adamw)"


def test_the_papers_choices_are_offered() -> None:
    assert {"ce", "l1", "l2", "kl"} <= set(Similarity.values())
    assert {"avg", "max"} <= set(Pool.values())
    assert {"random", "mean"} <= set(TeacherSelection.values())


@pytest.mark.parametrize(("method", "key", "enum"), CASES, ids=IDS)
def test_the_schema_default_of_a_choice_key_is_its_plain_value(method: str, key: str, enum: type[Enum]) -> None:
    default = schema_default(key, method_classes()[method].schema)
    assert type(default) is str and default in enum.values()


def test_archived_run_configs_hold_allowed_choices() -> None:
    """The run configs archived before the choice keys were typed give values the types accept."""
    assert ARCHIVED_CONFIGS, "no archived run configs found"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    keys = {"": list(choice_keys(MealConfig))}
    keys |= {name: list(choice_keys(cls.schema, "method.")) for name, cls in method_classes().items()}
    for path in ARCHIVED_CONFIGS:
        saved = yaml.load(path.read_text(), Loader=loader)
        for key, enum in keys[""] + keys[saved["method"]["name"]]:
            value = _get(saved, key)
            assert value is None or value in enum.values(), f"{path}: {key}={value!r}"


def _get(container: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(container, dict):
            return None
        container = container.get(part)
    return container
