"""Write ``results.csv``, ``results.md`` and the per-parameter plots of aggregated sweep results; for a search,
``best_trial.json`` and ``optimization_history.png``."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meal.reporting.aggregate import ConfigRow, Summary
from meal.reporting.collect import RunRecord
from meal.reporting.plots import plot_configurations, plot_optimization_history, plot_param, safe_name
from meal.reporting.stats import CONFIDENCE, Comparison, compare

logger = logging.getLogger(__name__)

CSV_FILE = "results.csv"
MD_FILE = "results.md"
BEST_TRIAL_FILE = "best_trial.json"
HISTORY_PLOT = "optimization_history.png"

#: columns after the swept parameters, ``{metric}_mean/_std`` are added after ``top5_std`` when
#: the metric has no column of its own
BASE_COLUMNS: tuple[str, ...] = (
    "n",
    "top1_mean",
    "top1_std",
    "top5_mean",
    "top5_std",
    "ensemble_top1_mean",
    "best_teacher_top1_mean",
    "img_per_s_mean",
    "seeds",
)
#: columns added before ``seeds`` when the report compares every configuration with a baseline
BASELINE_COLUMNS: tuple[str, ...] = ("diff_mean", "diff_ci_low", "diff_ci_high", "p_value", "test", "test_n")
#: how many job names a skipped-runs line lists before eliding the rest
MAX_LISTED = 12


def csv_columns(params: Sequence[str], metric: str = "top1", baseline: bool = False) -> list[str]:
    """The header of ``results.csv``.

    Swept parameters, then :data:`BASE_COLUMNS` with the metric's mean and std (when it has no column
    of its own) and its confidence interval ``{metric}_ci_low/_ci_high`` after ``top5_std``; with a
    baseline, :data:`BASELINE_COLUMNS` before ``seeds``.
    """
    stats = list(BASE_COLUMNS)
    extra = [f"{metric}_ci_low", f"{metric}_ci_high"]
    if metric not in ("top1", "top5"):
        extra = [f"{metric}_mean", f"{metric}_std", *extra]
        stats = [c for c in stats if c not in extra]
    at = stats.index("top5_std") + 1
    stats[at:at] = extra
    if baseline:
        at = stats.index("seeds")
        stats[at:at] = BASELINE_COLUMNS
    return [*params, *stats]


def _csv_number(value: float | None) -> str:
    """Full precision (``repr``), empty when undefined."""
    return "" if value is None else repr(float(value))


def _comparison_cells(comparison: Comparison | None) -> dict[str, str]:
    if comparison is None:
        return dict.fromkeys(BASELINE_COLUMNS, "")
    return {
        "diff_mean": _csv_number(comparison.diff),
        "diff_ci_low": _csv_number(comparison.low),
        "diff_ci_high": _csv_number(comparison.high),
        "p_value": _csv_number(comparison.p),
        "test": comparison.test,
        "test_n": ";".join(str(n) for n in comparison.n),
    }


def _csv_record(row: ConfigRow, columns: Sequence[str], metric: str, comparison: Comparison | None) -> dict[str, str]:
    record: dict[str, str] = {}
    ci = row.interval(metric)
    cells = _comparison_cells(comparison)
    for column in columns:
        if column in row.params:
            record[column] = row.params[column]
        elif column == "n":
            record[column] = str(row.n)
        elif column == "seeds":
            record[column] = ";".join(row.seeds)
        elif column in cells:
            record[column] = cells[column]
        elif column == f"{metric}_ci_low":
            record[column] = _csv_number(ci.low if ci else None)
        elif column == f"{metric}_ci_high":
            record[column] = _csv_number(ci.high if ci else None)
        else:
            name, _, stat = column.rpartition("_")
            summary = row.stats.get(name, Summary(None, None, 0))
            record[column] = _csv_number(summary.mean if stat == "mean" else summary.std)
    return record


def comparisons(rows: Sequence[ConfigRow], baseline: ConfigRow | None, metric: str = "top1") -> list[Comparison | None]:
    """Each row against the baseline (None for the baseline itself, and without one)."""
    if baseline is None:
        return [None] * len(rows)
    reference = baseline.by_seed(metric)
    result: list[Comparison | None] = []
    for row in rows:
        values = row.by_seed(metric)
        result.append(None if row is baseline or not values else compare(values, reference))
    return result


def write_csv(rows: Sequence[ConfigRow], path: Path, metric: str = "top1", baseline: ConfigRow | None = None) -> Path:
    """Write one line per configuration; undefined values (std of one run, no ensemble) are empty."""
    columns = csv_columns(list(rows[0].params) if rows else [], metric, baseline is not None)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row, comparison in zip(rows, comparisons(rows, baseline, metric), strict=True):
            writer.writerow(_csv_record(row, columns, metric, comparison))
    return path


def format_interval(low: float | None, high: float | None, digits: int = 2) -> str:
    """``[83.90, 84.34]``; ``-`` when undefined."""
    if low is None or high is None:
        return "-"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def format_p(p: float | None) -> str:
    """A p-value with three significant digits (``<1e-4`` below that); ``-`` when undefined."""
    if p is None:
        return "-"
    return "<1e-4" if p < 1e-4 else f"{p:.3g}"


def format_summary(summary: Summary | None, digits: int = 2, with_std: bool = True) -> str:
    """``84.12 ± 0.31``; ``84.12 ± -`` for a single run; ``-`` when nothing was measured."""
    if summary is None or summary.mean is None:
        return "-"
    mean = f"{summary.mean:.{digits}f}"
    if not with_std:
        return mean
    std = "-" if summary.std is None else f"{summary.std:.{digits}f}"
    return f"{mean} ± {std}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _manifest_lines(sweep_dir: str, manifest: Mapping[str, Any]) -> list[str]:
    lines = [f"- sweep `{sweep_dir}`"]
    known = {"overrides": "overrides", "git_revision": "git revision", "wandb_group": "W&B group"}
    for key, label in known.items():
        value = manifest.get(key)
        if value in (None, "", []):
            continue
        if isinstance(value, list | tuple):
            value = " ".join(str(v) for v in value)
        lines.append(f"  - {label}: `{value}`")
    for key, value in manifest.items():
        if key not in known:
            shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            lines.append(f"  - {key}: `{shown}`")
    return lines


def _skipped_lines(skipped: Mapping[str, Sequence[RunRecord]], total: int) -> list[str]:
    count = sum(len(runs) for runs in skipped.values())
    if not count:
        return [f"All {_count(total, 'run')} completed and aggregated."]
    lines = [f'**Skipped {count} of {total} runs** (only `status == "completed"` runs are aggregated):', ""]
    for reason, runs in sorted(skipped.items()):
        names = [f"`{r.name}`" for r in runs[:MAX_LISTED]]
        if len(runs) > MAX_LISTED:
            names.append(f"... {len(runs) - MAX_LISTED} more")
        lines.append(f"- {reason}: {len(runs)} ({', '.join(names)})")
    return lines


def write_markdown(
    rows: Sequence[ConfigRow],
    path: Path,
    metric: str = "top1",
    *,
    skipped: Mapping[str, Sequence[RunRecord]] | None = None,
    manifests: Mapping[str, Mapping[str, Any]] | None = None,
    sweep_dirs: Sequence[str] = (),
    plots: Mapping[str, Path] | None = None,
    baseline: ConfigRow | None = None,
) -> Path:
    """Write the results table (``mean ± std`` over seeds) with the sweep header and skip notes.

    The metric also gets its 95% confidence interval; with a ``baseline`` every other row gets the
    difference of means, its 95% confidence interval, the two-sided p-value and the test used.
    """
    skipped = skipped or {}
    manifests = manifests or {}
    params = list(rows[0].params) if rows else []
    aggregated = sum(row.n for row in rows)
    total = aggregated + sum(len(r) for r in skipped.values())

    lines = [f"# Results: {metric}", ""]
    if sweep_dirs or manifests:
        lines.append("Sweeps:")
        lines.append("")
        for sweep_dir in dict.fromkeys([*sweep_dirs, *manifests]):
            if sweep_dir in manifests:
                lines.extend(_manifest_lines(sweep_dir, manifests[sweep_dir]))
            else:
                lines.append(f"- sweep `{sweep_dir}`")
        lines.append("")
    if rows:
        swept = ", ".join(f"`{p}`" for p in params) if params else "none (a single configuration)"
        lines += [
            f"{_count(aggregated, 'completed run')} in {_count(len(rows), 'configuration')}. "
            f"Swept parameters: {swept}.",
            "Values are mean ± sample std over seeds (`-` where a single run gives no std); "
            f"`{metric} {_percent(CONFIDENCE)} CI` is the t interval of the mean.",
            "",
        ]
        if baseline is not None:
            lines += [
                f"Baseline: `{baseline.label()}`. `Δ` is mean({metric}) minus the baseline's, with its "
                f"{_percent(CONFIDENCE)} confidence interval and two-sided p-value: a paired t-test over seeds "
                "where both rows hold the same seeds, Welch's t-test otherwise (`test`; `n`: pairs, or the two "
                "run counts).",
                "",
            ]
    else:
        lines += [f"No completed run with a numeric `{metric}` yet.", ""]
    lines += [*_skipped_lines(skipped, total), ""]
    if not rows:
        path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
        return path

    metric_extra = metric not in ("top1", "top5")
    header = [*params, "n", "top1", "top5"]
    if metric_extra:
        header.append(metric)
    header.append(f"{metric} {_percent(CONFIDENCE)} CI")
    if baseline is not None:
        header += ["Δ", f"Δ {_percent(CONFIDENCE)} CI", "p", "test (n)"]
    header += ["ensemble_top1", "best_teacher_top1", "img_per_s", "seeds"]
    lines.append("| " + " | ".join(_cell(h) for h in header) + " |")
    lines.append("|" + "|".join("---:" if h not in params and h != "seeds" else "---" for h in header) + "|")
    for row, comparison in zip(rows, comparisons(rows, baseline, metric), strict=True):
        cells = [*(row.params[p] for p in params), str(row.n)]
        cells += [format_summary(row.stats.get("top1")), format_summary(row.stats.get("top5"))]
        if metric_extra:
            cells.append(format_summary(row.stats.get(metric)))
        ci = row.interval(metric)
        cells.append(format_interval(ci.low, ci.high) if ci else "-")
        if baseline is not None:
            cells += _comparison_markdown(row is baseline, comparison)
        cells += [
            format_summary(row.stats.get("ensemble_top1"), with_std=False),
            format_summary(row.stats.get("best_teacher_top1"), with_std=False),
            format_summary(row.stats.get("img_per_s"), digits=0, with_std=False),
            ", ".join(row.seeds),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")

    scored = [row for row in rows if row.mean(metric) is not None]
    if len(scored) > 1:
        best = max(scored, key=lambda row: row.mean(metric) or 0.0)
        where = ", ".join(f"`{k}={v}`" for k, v in best.params.items())
        lines += ["", f"Highest {metric}: {where} with {format_summary(best.stats[metric])} (n={best.n})."]

    if plots:
        lines += ["", "## Plots", ""]
        for param, plot_path in plots.items():
            title = (
                f"{metric} per configuration (mean, 95% CI)" if param == "configurations" else f"{metric} vs {param}"
            )
            lines += [f"![{title}]({plot_path.name})", ""]
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    return path


def _percent(level: float) -> str:
    return f"{level * 100:g}%"


def _comparison_markdown(is_baseline: bool, comparison: Comparison | None) -> list[str]:
    if is_baseline:
        return ["baseline", "", "", ""]
    if comparison is None:
        return ["-", "-", "-", "-"]
    n = " vs ".join(str(k) for k in comparison.n)
    return [
        f"{comparison.diff:+.2f}",
        format_interval(comparison.low, comparison.high),
        format_p(comparison.p),
        f"{comparison.test} ({n})",
    ]


def write_report(
    rows: Sequence[ConfigRow],
    out_dir: str | Path,
    *,
    metric: str = "top1",
    skipped: Mapping[str, Sequence[RunRecord]] | None = None,
    manifests: Mapping[str, Mapping[str, Any]] | None = None,
    sweep_dirs: Sequence[str] = (),
    baseline: ConfigRow | None = None,
    search: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md``, ``plot_<param>.png`` per swept parameter and, for two or
    more configurations, ``configurations_<metric>.png`` (each configuration's mean with its 95% CI).

    With a ``search`` (the sweep's search.json), also ``best_trial.json``, ``optimization_history.png``
    and a "Search" section in results.md.
    Returns ``{"csv": path, "md": path, "plot:<param>": path, ..., "configurations": path}`` (and
    ``"best_trial"``, ``"history"``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = list(rows[0].params) if rows else []
    plots: dict[str, Path] = {}
    taken: set[str] = set()
    for param in params:
        stem = f"plot_{safe_name(param)}"
        name, i = stem, 1
        while name in taken:
            i += 1
            name = f"{stem}_{i}"
        taken.add(name)
        path = out / f"{name}.png"
        plot_param(rows, param, path, metric)
        plots[param] = path
    if len(rows) > 1:
        plots["configurations"] = plot_configurations(
            rows, out / f"configurations_{safe_name(metric)}.png", metric, baseline
        )
    paths: dict[str, Path] = {
        "csv": write_csv(rows, out / CSV_FILE, metric, baseline),
        "md": write_markdown(
            rows,
            out / MD_FILE,
            metric,
            skipped=skipped,
            manifests=manifests,
            sweep_dirs=sweep_dirs,
            plots=plots,
            baseline=baseline,
        ),
    }
    paths.update({f"plot:{param}": path for param, path in plots.items() if param != "configurations"})
    if "configurations" in plots:
        paths["configurations"] = plots["configurations"]
    if search is not None:
        paths.update(write_search_outputs(search, out, paths["md"]))
    return paths


def best_trial(search: Mapping[str, Any]) -> dict[str, Any] | None:
    """The best trial of a search.json: number, value, params, overrides and run directory; None before any."""
    if search.get("best_trial") is None:
        return None
    keys = ("study_name", "direction", "best_trial", "best_value", "best_params", "best_overrides", "best_job_dir")
    return {key.removeprefix("best_"): search.get(key) for key in keys}


def write_search_outputs(search: Mapping[str, Any], out: Path, md_path: Path) -> dict[str, Path]:
    """``best_trial.json``, ``optimization_history.png`` and the "Search" section appended to results.md."""
    trials = list(search.get("trials") or [])
    best = best_trial(search)
    best_path = out / BEST_TRIAL_FILE
    best_path.write_text(json.dumps(best, indent=2) + "\n", encoding="utf-8")
    history = plot_optimization_history(trials, out / HISTORY_PLOT, str(search.get("direction", "maximize")))
    states = Counter(str(t.get("state")).lower() for t in trials)
    lines = [
        "",
        "## Search",
        "",
        f"Study `{search.get('study_name')}` ({search.get('sampler')} sampler, "
        f"{search.get('direction')}): {len(trials)} of {search.get('n_trials')} trials ("
        + ", ".join(f"{n} {state}" for state, n in states.items())
        + ").",
    ]
    if best is None:
        lines += ["", "No trial completed."]
    else:
        lines += [
            "",
            f"Best trial: {best['trial']} with {best['value']:.2f} in `{best['job_dir']}`:",
            "",
            "```",
            " ".join(best["overrides"] or []),
            "```",
        ]
    lines += ["", f"![optimization history]({history.name})", ""]
    with md_path.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    return {"best_trial": best_path, "history": history}
