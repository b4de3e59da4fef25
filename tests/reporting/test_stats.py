"""The report's statistics against values computed by hand (closed forms, tables, a numerical integral)."""

from __future__ import annotations

import math

import pytest

from meal.reporting.stats import PAIRED, WELCH, compare, interval, paired, welch

# Student's t two-sided 95% critical values from the published tables
T_975 = {2: 4.302653, 4: 2.776445}


def t_density(x: float, df: float) -> float:
    """Student's t probability density, written out."""
    return (
        math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2)) * (1 + x * x / df) ** (-(df + 1) / 2)
    )


def two_sided_tail(t_value: float, df: float, steps: int = 200_000) -> float:
    """``1 - integral_{-|t|}^{|t|} density`` by Simpson's rule."""
    a = abs(t_value)
    h = 2 * a / steps
    total = t_density(-a, df) + t_density(a, df)
    for i in range(1, steps):
        total += (4 if i % 2 else 2) * t_density(-a + i * h, df)
    return 1.0 - total * h / 3


def test_interval_of_one_to_five() -> None:
    ci = interval([1.0, 2.0, 3.0, 4.0, 5.0])
    sd = math.sqrt(2.5)  # squared deviations 4+1+0+1+4 = 10, over n - 1 = 4
    half = T_975[4] * sd / math.sqrt(5)
    assert (ci.mean, ci.n) == (3.0, 5)
    assert ci.std == pytest.approx(sd, abs=1e-12)
    assert (ci.low, ci.high) == (pytest.approx(3 - half, abs=1e-5), pytest.approx(3 + half, abs=1e-5))
    assert ci.low == pytest.approx(1.036757, abs=1e-5)


def test_interval_of_one_value_has_no_spread() -> None:
    ci = interval([87.5])
    assert (ci.mean, ci.std, ci.low, ci.high, ci.n) == (87.5, None, None, None, 1)
    with pytest.raises(ValueError):
        interval([])


def test_paired_t_test_by_hand() -> None:
    # differences 0.5, 0.5, 0.2: mean 0.4, sd sqrt(0.03), se 0.1, t = 4 with df = 2
    result = paired([91.0, 91.5, 90.8], [90.5, 91.0, 90.6])
    assert result.test == PAIRED and result.n == (3,) and result.df == 2
    assert result.diff == pytest.approx(0.4, abs=1e-12)
    assert result.low == pytest.approx(0.4 - T_975[2] * 0.1, abs=1e-5)
    assert result.high == pytest.approx(0.4 + T_975[2] * 0.1, abs=1e-5)
    # df = 2 has a closed-form CDF: P(|T| >= t) = 1 - t / sqrt(2 + t^2)
    assert result.p == pytest.approx(1 - 4 / math.sqrt(18), abs=1e-9)
    assert result.p == pytest.approx(0.0571909584, abs=1e-9)


def test_welch_t_test_by_hand() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0]
    var_a, var_b = 5 / 3, 2.0  # sample variances
    se2 = var_a / 4 + var_b / 2
    df = se2**2 / ((var_a / 4) ** 2 / 3 + (var_b / 2) ** 2 / 1)
    result = welch(a, b)
    assert result.test == WELCH and result.n == (4, 2)
    assert result.diff == pytest.approx(-0.5, abs=1e-12)
    assert result.df == pytest.approx(df, abs=1e-12)
    assert result.df == pytest.approx(1.8971553, abs=1e-6)
    t_value = -0.5 / math.sqrt(se2)
    assert result.p == pytest.approx(two_sided_tail(t_value, df), abs=1e-6)
    # the interval holds the difference +- t_crit * se, where the two-sided tail at t_crit is 5%
    half = (result.high - result.low) / 2
    assert result.low + half == pytest.approx(-0.5, abs=1e-12)
    assert two_sided_tail(half / math.sqrt(se2), df) == pytest.approx(0.05, abs=1e-5)


def test_compare_pairs_only_when_the_seeds_match() -> None:
    config = {"0": 91.0, "1": 91.5, "2": 90.8}
    base = {"0": 90.5, "1": 91.0, "2": 90.6}
    assert compare(config, base).test == PAIRED
    assert compare(config, base).p == pytest.approx(0.0571909584, abs=1e-9)
    # the same numbers under other seed names are two independent samples
    unpaired = compare(config, {"3": 90.5, "4": 91.0, "5": 90.6})
    assert unpaired.test == WELCH and unpaired.n == (3, 3)
    assert unpaired.diff == pytest.approx(0.4, abs=1e-12)
    assert unpaired.p > compare(config, base).p  # pairing removes the seed-to-seed spread


def test_identical_differences_are_exact() -> None:
    same = paired([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert (same.diff, same.low, same.high, same.p) == (0.5, 0.5, 0.5, 0.0)
    equal = paired([1.0, 2.0], [1.0, 2.0])
    assert (equal.diff, equal.p) == (0.0, 1.0)


def test_single_runs_give_no_test() -> None:
    assert welch([90.0], [89.0, 89.5]).p is None
    assert paired([90.0], [89.0]).low is None
