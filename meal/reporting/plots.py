"""One PNG per swept parameter: the metric (mean ± std over seeds) against the parameter's values; a search's
optimization history."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from meal.reporting.aggregate import PERCENT_FIELDS, ConfigRow, as_number, value_sort_key
from meal.reporting.stats import CONFIDENCE


@dataclass(frozen=True)
class Series:
    """One line of a plot: the configurations sharing the values of the other swept parameters."""

    others: dict[str, str]
    x: list[str]
    mean: list[float | None]
    std: list[float | None]
    n: list[int]

    @property
    def label(self) -> str:
        """Legend label: the other parameters' values (empty when nothing else is swept)."""
        return ", ".join(self.others.values())


def plot_series(rows: Sequence[ConfigRow], param: str, metric: str = "top1") -> list[Series]:
    """Split the rows into lines for a plot against ``param``: one per combination of the others.

    Lines are ordered by the other parameters' values, points by ``param``'s value.
    """
    if not rows:
        return []
    others = [key for key in rows[0].params if key != param]
    groups: dict[tuple[str, ...], list[ConfigRow]] = {}
    for row in rows:
        groups.setdefault(tuple(row.params[k] for k in others), []).append(row)
    series = []
    for values in sorted(groups, key=lambda vals: tuple(value_sort_key(v) for v in vals)):
        members = sorted(groups[values], key=lambda row: value_sort_key(row.params[param]))
        series.append(
            Series(
                others=dict(zip(others, values, strict=True)),
                x=[row.params[param] for row in members],
                mean=[row.mean(metric) for row in members],
                std=[row.std(metric) for row in members],
                n=[row.n for row in members],
            )
        )
    return series


def safe_name(text: str) -> str:
    """A filename-safe version of a parameter name (non-alphanumerics become ``_``)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "param"


def plot_param(rows: Sequence[ConfigRow], param: str, path: Path, metric: str = "top1") -> list[Series]:
    """Draw ``metric`` against ``param`` into the PNG ``path``; returns the plotted lines.

    The x axis is numeric when every value of ``param`` parses as a number (logarithmic when they
    are positive and span two or more decades), categorical otherwise. Error bars are the sample
    standard deviation over seeds; a legend appears when other parameters are also swept.
    """
    series = plot_series(rows, param, metric)
    categories = sorted({x for s in series for x in s.x}, key=value_sort_key)
    numbers = [as_number(x) for x in categories]
    numeric = all(v is not None for v in numbers)

    fig = Figure(figsize=(6.4, 4.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    offsets = _dodge(len(series)) if not numeric else [0.0] * len(series)
    for s, offset in zip(series, offsets, strict=True):
        points = [(x, m, sd) for x, m, sd in zip(s.x, s.mean, s.std, strict=True) if m is not None]
        if not points:
            continue
        xs = [as_number(x) if numeric else categories.index(x) + offset for x, _, _ in points]
        ax.errorbar(
            xs,
            [m for _, m, _ in points],
            yerr=[sd or 0.0 for _, _, sd in points],
            marker="o",
            capsize=3,
            label=s.label or None,
        )

    if numeric:
        positive = [v for v in numbers if v is not None and v > 0]
        if len(positive) == len(numbers) and max(positive) / min(positive) >= 100:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        if len(categories) <= 10:
            ax.set_xticks([float(v) for v in numbers if v is not None])
            ax.set_xticklabels(categories)
    else:
        ax.set_xticks(range(len(categories)))
        ax.set_xticklabels(categories)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    if len(categories) > 6 or any(len(c) > 10 for c in categories):
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")

    unit = " (%)" if metric in PERCENT_FIELDS else ""
    ax.set_xlabel(param)
    ax.set_ylabel(f"{metric}{unit}, mean ± std over seeds")
    ax.set_title(f"{metric} vs {param}")
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        title = ", ".join(series[0].others)
        if len(series) > 6:
            ax.legend(
                title=title,
                fontsize="small",
                title_fontsize="small",
                loc="upper left",
                bbox_to_anchor=(1.02, 1.0),
            )
        else:
            ax.legend(title=title, fontsize="small", title_fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return series


def plot_configurations(
    rows: Sequence[ConfigRow], path: Path, metric: str = "top1", baseline: ConfigRow | None = None
) -> Path:
    """One horizontal bar per configuration: the mean of ``metric`` with its 95% CI as error bar.

    A configuration of a single run has no interval (a bare point). The baseline, when given, is
    drawn in another colour with a dashed line at its mean.
    """
    shown = [(row, ci) for row, ci in ((row, row.interval(metric)) for row in rows) if ci is not None]
    fig = Figure(figsize=(7.2, 0.45 * len(shown) + 1.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for y, (row, ci) in enumerate(shown):
        err = [[ci.mean - ci.low], [ci.high - ci.mean]] if ci.low is not None and ci.high is not None else None
        colour = "tab:orange" if row is baseline else "tab:blue"
        ax.errorbar([ci.mean], [y], xerr=err, fmt="o", capsize=4, color=colour)
        ax.annotate(
            f"{ci.mean:.2f} (n={ci.n})",
            (ci.mean, y),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize="small",
        )
    reference = baseline.interval(metric) if baseline is not None else None
    if reference is not None:
        ax.axvline(reference.mean, color="tab:orange", linestyle="--", alpha=0.6)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([row.label() for row, _ in shown], fontsize="small")
    ax.set_ylim(-0.7, len(shown) - 0.3)
    ax.invert_yaxis()
    unit = " (%)" if metric in PERCENT_FIELDS else ""
    ax.set_xlabel(f"{metric}{unit}: mean and {CONFIDENCE * 100:g}% confidence interval over seeds")
    ax.grid(True, axis="x", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def _dodge(count: int, spread: float = 0.3) -> list[float]:
    """Small horizontal offsets so that error bars of lines on a categorical axis do not overlap."""
    if count < 2:
        return [0.0] * count
    step = spread / (count - 1)
    return [i * step - spread / 2 for i in range(count)]


def plot_optimization_history(
    trials: Sequence[Mapping[str, Any]], path: Path, direction: str = "maximize", label: str = "objective"
) -> Path:
    """Draw a search's history into the PNG ``path``: each completed trial's value by trial number and the
    best value so far (a step line); ``trials`` are search.json's trial records."""
    done = sorted((t for t in trials if t.get("value") is not None), key=lambda t: t["number"])
    pick = max if direction == "maximize" else min
    best: list[float] = []
    for trial in done:
        best.append(pick(best[-1], trial["value"]) if best else trial["value"])

    fig = Figure(figsize=(6.4, 4.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    numbers = [t["number"] for t in done]
    ax.plot(numbers, [t["value"] for t in done], "o", label="trial")
    ax.step(numbers, best, where="post", color="C3", label=f"best so far ({direction})")
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.set_title(f"Optimization history: {label}")
    ax.grid(True, alpha=0.3)
    if done:
        ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
