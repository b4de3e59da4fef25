"""Detect the swept parameters of a set of runs and summarise each configuration over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from meal.core.result import RESULT_FILE
from meal.keys import NOT_SWEPT_KEYS, key_patterns
from meal.reporting.collect import ReportError, RunRecord
from meal.reporting.stats import Interval, interval

#: override keys (glob patterns) that never count as swept: the seed and the keys that choose where or
#: how a run executes rather than what it computes (one definition: :data:`meal.keys.NOT_SWEPT_KEYS`)
EXCLUDED_KEYS: tuple[str, ...] = key_patterns(NOT_SWEPT_KEYS)

#: result fields summarised for every configuration (percent, except img_per_s and wall_s)
SUMMARY_FIELDS: tuple[str, ...] = (
    "top1",
    "top5",
    "val_top1",
    "val_top5",
    "best_top1",
    "ensemble_top1",
    "best_teacher_top1",
    "img_per_s",
    "wall_s",
)
#: fields accepted as the report's metric
METRICS: tuple[str, ...] = (*SUMMARY_FIELDS, "params")
#: fields holding percentages
PERCENT_FIELDS: frozenset[str] = frozenset(
    {"top1", "top5", "val_top1", "val_top5", "best_top1", "ensemble_top1", "best_teacher_top1"}
)


def is_excluded(key: str, extra: Iterable[str] = ()) -> bool:
    """True when an override key matches :data:`EXCLUDED_KEYS` or one of the ``extra`` patterns."""
    return any(fnmatchcase(key, pattern) for pattern in (*EXCLUDED_KEYS, *extra))


def as_number(text: str) -> float | None:
    """Parse an override value as a number (``"0.1"``, ``"1e-3"``); None when it is not one."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def value_sort_key(text: str) -> tuple[int, float, str]:
    """Order override values numerically when they are numbers, else alphabetically after them."""
    value = as_number(text)
    return (0, value, "") if value is not None else (1, 0.0, text)


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and count of one field over the runs of a configuration.

    ``mean`` is None when no run has the field; ``std`` is None when fewer than two do.
    """

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Summary:
        """Summarise the non-missing values."""
        present = [v for v in values if v is not None]
        if not present:
            return cls(None, None, 0)
        std = statistics.stdev(present) if len(present) > 1 else None
        return cls(statistics.fmean(present), std, len(present))


@dataclass
class ConfigRow:
    """One configuration: a tuple of swept values, its runs (one per seed) and their summaries."""

    params: dict[str, str]
    runs: list[RunRecord]
    stats: dict[str, Summary]

    @property
    def n(self) -> int:
        """Number of runs aggregated into this configuration."""
        return len(self.runs)

    @property
    def seeds(self) -> list[str]:
        """The runs' seeds, numerically sorted (``"?"`` for a run without one)."""
        return sorted((r.seed if r.seed is not None else "?" for r in self.runs), key=value_sort_key)

    @property
    def sort_key(self) -> tuple[tuple[int, float, str], ...]:
        """Key ordering configurations by their swept values."""
        return tuple(value_sort_key(v) for v in self.params.values())

    def mean(self, name: str) -> float | None:
        """Mean of a field over the runs (None when no run has it)."""
        return self.stats[name].mean if name in self.stats else None

    def std(self, name: str) -> float | None:
        """Sample standard deviation of a field (None when fewer than two runs have it)."""
        return self.stats[name].std if name in self.stats else None

    def by_seed(self, name: str) -> dict[str, float]:
        """``{seed: value}`` of a field over the runs that have it (a run without a seed keys by its name)."""
        values: dict[str, float] = {}
        for run in self.runs:
            value = run.value(name)
            if value is not None:
                values[run.seed if run.seed is not None else run.name] = value
        return values

    def interval(self, name: str) -> Interval | None:
        """Mean, std and 95% confidence interval of a field over seeds (None when no run has it)."""
        values = list(self.by_seed(name).values())
        return interval(values) if values else None

    def label(self) -> str:
        """``key=value, ...`` of the swept values (``all runs`` when nothing is swept)."""
        return ", ".join(f"{k}={v}" for k, v in self.params.items()) or "all runs"


def skip_reason(run: RunRecord, metric: str = "top1") -> str | None:
    """Why a run is left out of the aggregate (``"status failed"``, ...), or None to keep it."""
    if run.problem is not None:
        return f"unreadable {RESULT_FILE}"
    if run.status != "completed":
        return f"status {run.status}"
    if run.value(metric) is None:
        return f"no numeric {metric}"
    return None


def skipped_runs(runs: Iterable[RunRecord], metric: str = "top1") -> dict[str, list[RunRecord]]:
    """The runs left out of the aggregate, grouped by :func:`skip_reason`."""
    skipped: dict[str, list[RunRecord]] = {}
    for run in runs:
        reason = skip_reason(run, metric)
        if reason is not None:
            skipped.setdefault(reason, []).append(run)
    return skipped


def swept_parameters(runs: Sequence[RunRecord], exclude: Iterable[str] = ()) -> list[str]:
    """Override keys whose value differs between runs, in order of first appearance.

    A key overridden in some jobs only is compared through each other job's saved config
    (see :meth:`RunRecord.setting`). Keys matching :data:`EXCLUDED_KEYS` or ``exclude`` are
    never swept.
    """
    extra = tuple(exclude)
    keys: dict[str, None] = {}
    for run in runs:
        for key in run.overrides:
            if not is_excluded(key, extra):
                keys.setdefault(key, None)
    return [key for key in keys if len({run.setting(key) for run in runs}) > 1]


def aggregate(runs: Sequence[RunRecord], metric: str = "top1", exclude: Iterable[str] = ()) -> list[ConfigRow]:
    """Group the completed runs by their swept values and summarise each group over seeds.

    Runs for which :func:`skip_reason` gives a reason are left out. Rows come sorted by the
    swept values (numbers numerically). Every row summarises :data:`SUMMARY_FIELDS` and ``metric``.
    """
    kept = [run for run in runs if skip_reason(run, metric) is None]
    keys = swept_parameters(kept, exclude)
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for run in kept:
        groups.setdefault(tuple(run.setting(k) for k in keys), []).append(run)
    fields = SUMMARY_FIELDS if metric in SUMMARY_FIELDS else (*SUMMARY_FIELDS, metric)
    rows = [
        ConfigRow(
            params=dict(zip(keys, values, strict=True)),
            runs=group,
            stats={name: Summary.of(run.value(name) for run in group) for name in fields},
        )
        for values, group in groups.items()
    ]
    rows.sort(key=lambda row: row.sort_key)
    return rows


def parse_baseline(spec: Sequence[str]) -> dict[str, str]:
    """``["method=ce", "student=fmnist_tiny"]`` -> ``{"method": "ce", "student": "fmnist_tiny"}``.

    Raises:
        ReportError: an item without ``=``.
    """
    parsed: dict[str, str] = {}
    for item in spec:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ReportError(f"--baseline {item!r}: expected KEY=VALUE, e.g. --baseline method=ce")
        parsed[key.strip()] = value.strip()
    return parsed


def find_baseline(rows: Sequence[ConfigRow], spec: dict[str, str]) -> ConfigRow:
    """The one configuration whose swept values match every ``key=value`` of ``spec``.

    Raises:
        ReportError: a key is not swept, or no or several configurations match.
    """
    swept = list(rows[0].params) if rows else []
    for key in spec:
        if key not in swept:
            listed = ", ".join(swept) or "none"
            raise ReportError(f"--baseline {key}: not a swept parameter of these runs (swept: {listed})")
    matches = [row for row in rows if all(row.params[k] == v for k, v in spec.items())]
    wanted = ", ".join(f"{k}={v}" for k, v in spec.items())
    if not matches:
        raise ReportError(
            f"--baseline {wanted}: no configuration matches (configurations: {'; '.join(row.label() for row in rows)})"
        )
    if len(matches) > 1:
        raise ReportError(
            f"--baseline {wanted}: {len(matches)} configurations match; add a KEY=VALUE to "
            f"pick one of: {'; '.join(row.label() for row in matches)}"
        )
    return matches[0]
