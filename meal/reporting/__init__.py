"""Read the results of Hydra multirun sweeps and summarise them (tables, CSV, plots).

The command-line entry point is :mod:`meal.report`; this package holds the pieces:

- :mod:`meal.reporting.collect`: find ``result.json`` files and read one :class:`RunRecord` per job.
- :mod:`meal.reporting.aggregate`: detect swept parameters, group runs into configurations.
- :mod:`meal.reporting.stats`: confidence intervals and tests against a baseline (paired or Welch t).
- :mod:`meal.reporting.plots`: one PNG per swept parameter, one of every configuration with its CI.
- :mod:`meal.reporting.write`: ``results.csv``, ``results.md`` and the plots in one call.
"""

from __future__ import annotations

from meal.reporting.aggregate import (
    EXCLUDED_KEYS,
    METRICS,
    ConfigRow,
    Summary,
    aggregate,
    find_baseline,
    is_excluded,
    parse_baseline,
    skip_reason,
    skipped_runs,
    swept_parameters,
)
from meal.reporting.collect import ReportError, RunRecord, collect_runs, parse_overrides, read_manifests
from meal.reporting.plots import Series, plot_configurations, plot_param, plot_series
from meal.reporting.stats import Comparison, Interval, compare, interval
from meal.reporting.write import csv_columns, write_csv, write_markdown, write_report

__all__ = [
    "EXCLUDED_KEYS",
    "METRICS",
    "Comparison",
    "ConfigRow",
    "Interval",
    "ReportError",
    "RunRecord",
    "Series",
    "Summary",
    "aggregate",
    "collect_runs",
    "compare",
    "csv_columns",
    "find_baseline",
    "interval",
    "is_excluded",
    "parse_baseline",
    "parse_overrides",
    "plot_configurations",
    "plot_param",
    "plot_series",
    "read_manifests",
    "skip_reason",
    "skipped_runs",
    "swept_parameters",
    "write_csv",
    "write_markdown",
    "write_report",
]
