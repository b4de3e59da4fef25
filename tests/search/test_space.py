"""meal.search.space: Hydra override expressions to Optuna distributions and back to overrides."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from meal.errors import ConfigError
from meal.search.space import parse_search_space


def _one(expression: str, key: str = "method.eta"):
    space = parse_search_space({key: expression}, [])
    assert len(space.dimensions) == 1 and space.fixed == ()
    return space.dimensions[0]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("interval(0.01, 1.0)", FloatDistribution(0.01, 1.0)),
        ("tag(log, interval(0.001, 0.3))", FloatDistribution(0.001, 0.3, log=True)),
        ("tag(int, interval(8, 64))", IntDistribution(8, 64)),
        ("tag(int, log, interval(8, 64))", IntDistribution(8, 64, log=True)),
        ("range(1, 9, 2)", IntDistribution(1, 7, step=2)),
        ("range(2, 6)", IntDistribution(2, 5)),
        ("tag(log, range(1, 17))", IntDistribution(1, 16, log=True)),
        ("choice(1, 2, 4)", CategoricalDistribution([1, 2, 4])),
        ("1,2,4", CategoricalDistribution([1, 2, 4])),
        ("choice(grl, joint)", CategoricalDistribution(["grl", "joint"])),
    ],
)
def test_expression_becomes_distribution(expression: str, expected) -> None:
    assert _one(expression).distribution == expected


def test_float_range_and_lists_are_categorical_over_their_written_values() -> None:
    ranged = _one("range(0.25, 1.0, 0.25)")
    assert ranged.distribution == CategoricalDistribution([0.25, 0.5, 0.75])
    assert ranged.override(0.5) == "method.eta=0.5"
    lists = _one("[0.5,1.0],[1.0]", key="method.gamma")
    assert lists.distribution == CategoricalDistribution(["[0.5,1.0]", "[1.0]"])
    assert lists.override("[1.0]") == "method.gamma=[1.0]"


def test_sampled_values_are_written_back_as_overrides() -> None:
    space = parse_search_space(
        {
            "method.eta": "tag(log, interval(0.01, 1.0))",
            "method.K": "range(2, 10, 2)",
            "optim.name": "choice(sgd,adamw)",
        },
        ["seed=3", "data.val_split=0.1"],
    )
    assert space.fixed == ("seed=3", "data.val_split=0.1")
    overrides = space.overrides({"method.eta": 0.0123, "method.K": 6, "optim.name": "adamw"})
    assert overrides == ["seed=3", "data.val_split=0.1", "method.eta=0.0123", "method.K=6", "optim.name=adamw"]
    with pytest.raises(KeyError, match=r"method\.K"):
        space.overrides({"method.eta": 0.5, "optim.name": "sgd"})


def test_command_line_replaces_a_params_entry_and_fixed_params_pass_through() -> None:
    space = parse_search_space({"optim.lr": "interval(0.01, 0.1)", "trainer.epochs": 3}, ["optim.lr=0.05,0.1", "+x=1"])
    assert [d.key for d in space.dimensions] == ["optim.lr"]
    assert space.dimensions[0].distribution == CategoricalDistribution([0.05, 0.1])
    assert space.fixed == ("trainer.epochs=3", "+x=1")


def test_describe_changes_with_the_space() -> None:
    a = parse_search_space({"method.eta": "interval(0.01, 1.0)"}, []).describe()
    b = parse_search_space({"method.eta": "interval(0.01, 0.5)"}, []).describe()
    assert set(a) == {"method.eta"} and a != b


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("interval(1.0, 0.5)", r"method\.eta: interval\(1\.0, 0\.5\) is empty"),
        ("tag(log, interval(0.0, 1.0))", r"method\.eta: a log interval must start above 0"),
        ("tag(int, interval(0.5, 4))", r"whole-number bounds"),
        ("tag(cubic, interval(0.1, 1))", r"unknown tag cubic"),
        ("tag(log, range(1, 9, 2))", r"a log range needs step 1"),
        ("tag(log, choice(1, 2))", r"unknown tag log"),
        ("glob(*)", r"cannot search over"),
    ],
)
def test_bad_expressions_are_one_line_config_errors(expression: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_search_space({"method.eta": expression}, [])
