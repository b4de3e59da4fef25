"""Summarise Hydra multirun sweeps: ``python -m meal.report DIR [DIR ...] [--out OUTDIR] [--metric top1]``.

Reads every ``result.json`` below the sweep directories, groups the completed runs by the values
of the swept overrides (the keys whose values differ between jobs, seeds and launcher/cluster
settings excluded), and writes ``results.md``, ``results.csv`` and one ``plot_<param>.png`` per
swept parameter into OUTDIR (default: the first DIR). The library API lives in
:mod:`meal.reporting` and is re-exported here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from meal.entry import run_entry_point
from meal.errors import MealError
from meal.reporting import (
    EXCLUDED_KEYS,
    METRICS,
    ConfigRow,
    ReportError,
    RunRecord,
    Series,
    Summary,
    aggregate,
    collect_runs,
    find_baseline,
    parse_baseline,
    plot_param,
    plot_series,
    read_manifests,
    skipped_runs,
    swept_parameters,
    write_report,
)
from meal.search.summary import read_search

__all__ = [
    "EXCLUDED_KEYS",
    "METRICS",
    "ConfigRow",
    "ReportError",
    "RunRecord",
    "Series",
    "Summary",
    "aggregate",
    "build_parser",
    "collect_runs",
    "find_baseline",
    "main",
    "parse_baseline",
    "plot_param",
    "plot_series",
    "read_manifests",
    "skipped_runs",
    "swept_parameters",
    "write_report",
]

logger = logging.getLogger("meal.report")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m meal.report``."""
    parser = argparse.ArgumentParser(
        prog="python -m meal.report",
        description="Aggregate the result.json files of Hydra multirun sweeps into results.md, "
        "results.csv and one plot per swept parameter.",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="sweep directories (Hydra multirun dirs)")
    parser.add_argument("--out", metavar="OUTDIR", help="where to write the report (default: the first DIR)")
    parser.add_argument("--metric", default="top1", choices=METRICS, help="metric to plot and rank by (default: top1)")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the configuration every other row is compared with (difference of means, 95%% CI, p-value), "
        "e.g. --baseline method=ce; repeat to match several swept keys",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="override keys (glob) never treated as swept, in addition to the seed and the execution keys "
        "of meal/keys.py (hydra, paths, logger, cluster, resources, trainer.log_every_steps, ...); may be repeated",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report CLI; returns the exit status (0 ok, 2 for a missing or empty directory)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        runs = collect_runs(args.dirs)
    except MealError as exc:
        logger.error("error: %s", exc)
        return 2
    rows = aggregate(runs, args.metric, exclude=args.exclude)
    try:
        baseline = find_baseline(rows, parse_baseline(args.baseline)) if args.baseline and rows else None
    except MealError as exc:
        logger.error("error: %s", exc)
        return 2
    skipped = skipped_runs(runs, args.metric)
    if not rows:
        logger.warning("no completed run with a numeric %s; the report lists skipped runs only", args.metric)
    out_dir = Path(args.out) if args.out else Path(args.dirs[0])
    search = read_search(Path(args.dirs[0]))
    paths = write_report(
        rows,
        out_dir,
        metric=args.metric,
        skipped=skipped,
        manifests=read_manifests(args.dirs),
        sweep_dirs=list(args.dirs),
        baseline=baseline,
        search=search,
    )
    if search is not None:
        if search.get("best_trial") is None:
            logger.info("search %s: no trial completed", search.get("study_name"))
        else:
            logger.info(
                "best trial %s: %.2f (%s) %s -> %s",
                search["best_trial"],
                search["best_value"],
                search.get("direction"),
                " ".join(search.get("best_overrides") or []),
                paths["best_trial"],
            )
    n_plots = sum(key.startswith("plot:") for key in paths)
    n_skipped = sum(len(r) for r in skipped.values())
    logger.info(
        "%d runs in %d configuration(s), %d skipped -> wrote %s, %s and %d plot(s) to %s",
        sum(row.n for row in rows),
        len(rows),
        n_skipped,
        paths["md"].name,
        paths["csv"].name,
        n_plots,
        out_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main))
