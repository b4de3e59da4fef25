"""Print the results suite's tables (experiments/README.md) from the archived runs.

    python experiments/suite/tables.py [RUNS_DIR]     # default: experiments/results/runs

Each table is one `meal.report` aggregation (the same code as `python -m meal.report ... --baseline`),
laid out with readable method names; every number comes from the runs' result.json files.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from meal.reporting import aggregate, collect_runs, find_baseline
from meal.reporting.write import comparisons, format_interval, format_p, format_summary

METHOD_KEY = "suite/fmnist_method"
NAMES = {
    "ce": "CE (labels only)",
    "ce_plain": "CE fine-tuning (labels only)",
    "kd": "KD",
    "meal_v1": "MEAL v1, logits",
    "meal_v1_blockwise": "MEAL v1, every block",
    "meal_v2": "MEAL V2",
}
#: table name -> (sweep folders, baseline method)
TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "fmnist_tiny, from scratch": (("scratch_tiny_ce", "scratch_tiny_kdv2", "scratch_tiny_v1"), "ce"),
    "fmnist_tiny, fine-tuning the CE student": (("finetune_tiny",), "ce_plain"),
    "fmnist_small, from scratch": (("scratch_small_ce", "scratch_small_kdv2"), "ce"),
}


def table(runs_dir: Path, sweeps: Sequence[str], baseline_method: str) -> str:
    """The markdown table of one comparison: test and validation top-1 per method, difference to the baseline."""
    present = [str(runs_dir / s) for s in sweeps if (runs_dir / s).is_dir()]
    if not present:
        return "(no runs yet)"
    rows = aggregate(collect_runs(present), "top1")
    baseline = find_baseline(rows, {METHOD_KEY: baseline_method})
    lines = [
        "| method | n | test top-1 | 95% CI | Δ vs " + NAMES[baseline_method] + " | 95% CI of Δ | p | val top-1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = list(NAMES)
    pairs = sorted(
        zip(rows, comparisons(rows, baseline, "top1"), strict=True),
        key=lambda pair: order.index(pair[0].params[METHOD_KEY]),
    )
    for row, comparison in pairs:
        ci = row.interval("top1")
        cells = [
            NAMES[row.params[METHOD_KEY]],
            str(row.n),
            format_summary(row.stats["top1"]),
            format_interval(ci.low, ci.high) if ci else "-",
        ]
        if comparison is None:
            cells += ["baseline", "", ""]
        else:
            cells += [
                f"{comparison.diff:+.2f}",
                format_interval(comparison.low, comparison.high),
                format_p(comparison.p),
            ]
        cells.append(format_summary(row.stats["val_top1"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """Print every table of :data:`TABLES`."""
    runs_dir = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "results" / "runs"
    for title, (sweeps, baseline) in TABLES.items():
        sys.stdout.write(f"### {title}\n\n{table(runs_dir, sweeps, baseline)}\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
