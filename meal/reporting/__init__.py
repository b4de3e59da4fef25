"""Read the results of Hydra multirun sweeps and summarise them (tables, CSV, plots).

The command-line entry point is :mod:`meal.report`; this package holds the pieces:

- :mod:`meal.reporting.collect`: find ``result.json`` files and read one :class:`RunRecord` per job.
- :mod:`meal.reporting.aggregate`: detect swept parameters, group runs into configurations.
- :mod:`meal.reporting.plots`: one PNG per swept parameter.
- :mod:`meal.reporting.write`: ``results.csv``, ``results.md`` and the plots in one call.
"""

from __future__ import annotations

from meal.reporting.aggregate import (
    EXCLUDED_KEYS,
    METRICS,
    ConfigRow,
    Summary,
    aggregate,
    is_excluded,
    skip_reason,
    skipped_runs,
    swept_parameters,
)
from meal.reporting.collect import ReportError, RunRecord, collect_runs, parse_overrides, read_manifests
from meal.reporting.plots import Series, plot_param, plot_series
from meal.reporting.write import csv_columns, write_csv, write_markdown, write_report

__all__ = [
    "EXCLUDED_KEYS",
    "METRICS",
    "ConfigRow",
    "ReportError",
    "RunRecord",
    "Series",
    "Summary",
    "aggregate",
    "collect_runs",
    "csv_columns",
    "is_excluded",
    "parse_overrides",
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
