"""Write ``results.csv``, ``results.md`` and the per-parameter plots of aggregated sweep results."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meal.reporting.aggregate import ConfigRow, Summary
from meal.reporting.collect import RunRecord
from meal.reporting.plots import plot_param, safe_name

logger = logging.getLogger(__name__)

CSV_FILE = "results.csv"
MD_FILE = "results.md"

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
#: how many job names a skipped-runs line lists before eliding the rest
MAX_LISTED = 12


def csv_columns(params: Sequence[str], metric: str = "top1") -> list[str]:
    """The header of ``results.csv``: swept parameters, then :data:`BASE_COLUMNS` (+ the metric's)."""
    stats = list(BASE_COLUMNS)
    if metric not in ("top1", "top5"):
        extra = [f"{metric}_mean", f"{metric}_std"]
        stats = [c for c in stats if c not in extra]
        at = stats.index("top5_std") + 1
        stats[at:at] = extra
    return [*params, *stats]


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(round(value, 6))


def _csv_record(row: ConfigRow, columns: Sequence[str]) -> dict[str, str]:
    record: dict[str, str] = {}
    for column in columns:
        if column in row.params:
            record[column] = row.params[column]
        elif column == "n":
            record[column] = str(row.n)
        elif column == "seeds":
            record[column] = ";".join(row.seeds)
        else:
            name, _, stat = column.rpartition("_")
            summary = row.stats.get(name, Summary(None, None, 0))
            record[column] = _csv_number(summary.mean if stat == "mean" else summary.std)
    return record


def write_csv(rows: Sequence[ConfigRow], path: Path, metric: str = "top1") -> Path:
    """Write one line per configuration; undefined values (std of one run, no ensemble) are empty."""
    columns = csv_columns(list(rows[0].params) if rows else [], metric)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(_csv_record(row, columns))
    return path


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
) -> Path:
    """Write the results table (``mean ± std`` over seeds) with the sweep header and skip notes."""
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
            "Values are mean ± sample std over seeds (`-` where a single run gives no std).",
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
    header += ["ensemble_top1", "best_teacher_top1", "img_per_s", "seeds"]
    lines.append("| " + " | ".join(_cell(h) for h in header) + " |")
    lines.append("|" + "|".join("---:" if h not in params and h != "seeds" else "---" for h in header) + "|")
    for row in rows:
        cells = [*(row.params[p] for p in params), str(row.n)]
        cells += [format_summary(row.stats.get("top1")), format_summary(row.stats.get("top5"))]
        if metric_extra:
            cells.append(format_summary(row.stats.get(metric)))
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
            lines += [f"![{metric} vs {param}]({plot_path.name})", ""]
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    return path


def write_report(
    rows: Sequence[ConfigRow],
    out_dir: str | Path,
    *,
    metric: str = "top1",
    skipped: Mapping[str, Sequence[RunRecord]] | None = None,
    manifests: Mapping[str, Mapping[str, Any]] | None = None,
    sweep_dirs: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and ``plot_<param>.png`` per swept parameter.

    Returns ``{"csv": path, "md": path, "plot:<param>": path, ...}``.
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
    paths: dict[str, Path] = {
        "csv": write_csv(rows, out / CSV_FILE, metric),
        "md": write_markdown(
            rows,
            out / MD_FILE,
            metric,
            skipped=skipped,
            manifests=manifests,
            sweep_dirs=sweep_dirs,
            plots=plots,
        ),
    }
    paths.update({f"plot:{param}": path for param, path in plots.items()})
    return paths
