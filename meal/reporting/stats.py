"""Statistics for results tables: confidence intervals over seeds and tests against a baseline.

Every figure is a textbook formula; scipy supplies only Student's t distribution.

- :func:`interval`: mean, sample std and the two-sided t confidence interval of the mean.
- :func:`compare`: the difference of means between a configuration and a baseline, with its
  confidence interval and two-sided p-value, from a paired t-test when both were run with the same
  seeds (the same seed gives both the same initial weights and data order), Welch's t-test otherwise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy.stats import t as student_t

#: confidence level of every interval in the report
CONFIDENCE = 0.95
PAIRED = "paired t"
WELCH = "Welch t"


@dataclass(frozen=True)
class Interval:
    """Mean, sample std, count and the confidence interval of the mean (None where undefined)."""

    mean: float
    std: float | None
    n: int
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Comparison:
    """A configuration against the baseline: ``diff = mean(config) - mean(baseline)``.

    ``test`` is :data:`PAIRED` or :data:`WELCH`; ``n`` the number of pairs (paired) or the two
    counts (Welch); ``p`` the two-sided p-value; None where the data cannot give one (fewer than two
    values on a side).
    """

    diff: float
    low: float | None
    high: float | None
    p: float | None
    test: str
    df: float | None
    n: tuple[int, ...]


def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided critical value of Student's t with ``df`` degrees of freedom."""
    return float(student_t.ppf(0.5 + confidence / 2, df))


def two_sided_p(t_value: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` degrees of freedom."""
    return float(2.0 * student_t.sf(abs(t_value), df))


def interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """``mean ± t_{n-1} * s / sqrt(n)``; std and the interval are None for a single value.

    Raises:
        ValueError: no values.
    """
    if not values:
        raise ValueError("interval of no values")
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return Interval(mean, None, n, None, None)
    std = statistics.stdev(values)
    half = t_quantile(n - 1, confidence) * std / math.sqrt(n)
    return Interval(mean, std, n, mean - half, mean + half)


def _t_test(diff: float, se: float, df: float, confidence: float) -> tuple[float, float, float]:
    """Interval and p-value of a difference with standard error ``se``; a zero ``se`` is exact."""
    if se == 0.0:
        return diff, diff, (1.0 if diff == 0.0 else 0.0)
    half = t_quantile(df, confidence) * se
    return diff - half, diff + half, two_sided_p(diff / se, df)


def paired(config: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE) -> Comparison:
    """Paired t-test on the per-seed differences ``config[i] - baseline[i]`` (df = n - 1)."""
    if len(config) != len(baseline):
        raise ValueError(f"paired samples differ in length: {len(config)} and {len(baseline)}")
    diffs = [a - b for a, b in zip(config, baseline, strict=True)]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return Comparison(mean, None, None, None, PAIRED, None, (n,))
    se = statistics.stdev(diffs) / math.sqrt(n)
    low, high, p = _t_test(mean, se, n - 1, confidence)
    return Comparison(mean, low, high, p, PAIRED, float(n - 1), (n,))


def welch(config: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE) -> Comparison:
    """Welch's t-test: ``se = sqrt(s1^2/n1 + s2^2/n2)`` and the Welch-Satterthwaite degrees of freedom."""
    n1, n2 = len(config), len(baseline)
    diff = statistics.fmean(config) - statistics.fmean(baseline)
    if n1 < 2 or n2 < 2:
        return Comparison(diff, None, None, None, WELCH, None, (n1, n2))
    a, b = statistics.variance(config) / n1, statistics.variance(baseline) / n2
    se = math.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1)) if se > 0 else float(n1 + n2 - 2)
    low, high, p = _t_test(diff, se, df, confidence)
    return Comparison(diff, low, high, p, WELCH, df, (n1, n2))


def compare(config: Mapping[str, float], baseline: Mapping[str, float], confidence: float = CONFIDENCE) -> Comparison:
    """Compare two configurations given as ``{seed: value}``.

    Paired by seed when both hold exactly the same seeds (at least two), Welch's test otherwise.

    Raises:
        ValueError: either side is empty.
    """
    if not config or not baseline:
        raise ValueError("comparison with an empty side")
    if set(config) == set(baseline) and len(config) >= 2:
        seeds = sorted(config)
        return paired([config[s] for s in seeds], [baseline[s] for s in seeds], confidence)
    return welch(list(config.values()), list(baseline.values()), confidence)
