"""Print the results suite's tables (experiments/README.md) from the archived runs.

    python experiments/suite/tables.py [RUNS_DIR] [--plots DIR]     # default: experiments/results/runs

Each table is one `meal.report` aggregation (the same code as `python -m meal.report ... --baseline`),
laid out with readable row names; every number comes from the runs' result.json files.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from meal.reporting import ConfigRow, ReportError, aggregate, collect_runs, find_baseline
from meal.reporting.plots import plot_configurations
from meal.reporting.write import comparisons, format_interval, format_p, format_summary

METHOD_KEY = "suite/fmnist_method"
TEACHERS_KEY = "teachers"
METHODS = {
    "ce": "CE (labels only)",
    "ce_plain": "CE fine-tuning (labels only)",
    "kd": "KD",
    "meal_v1": "MEAL v1, logits",
    "meal_v1_blockwise": "MEAL v1, every block",
    "meal_v2": "MEAL V2",
    "dkd": "DKD",
}
TEACHER_SETS = {"fmnist_strong_single": "1 teacher", "fmnist_strong_pair": "2 teachers", "fmnist_strong": "3 teachers"}


@dataclass(frozen=True)
class Table:
    """One comparison: the sweeps it reads, its baseline row, and optionally the seeds and methods it keeps."""

    sweeps: tuple[str, ...]
    baseline: str
    seeds: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    required: tuple[str, ...] = ()
    plot: str | None = None


TABLES: dict[str, Table] = {
    "fmnist_tiny, from scratch": Table(
        ("scratch_tiny_ce", "scratch_tiny_kdv2", "scratch_tiny_v1", "scratch_tiny_dkd"), "ce"
    ),
    "fmnist_tiny, fine-tuning the CE student, LR 0.03 (chosen on the validation split)": Table(
        ("finetune_tiny_lr03", "finetune_tiny_lr03_v2"), "ce_plain"
    ),
    "fmnist_tiny, fine-tuning the CE student, LR 0.01 (set before the LR was tuned)": Table(
        ("finetune_tiny", "finetune_tiny_v2"), "ce_plain"
    ),
    "fmnist_small, from scratch": Table(("scratch_small_ce", "scratch_small_kdv2"), "ce"),
    "fmnist_tiny, MEAL v1 on the logits with 1, 2 and 3 teachers (seeds 0-2)": Table(
        ("scratch_tiny_ce", "scratch_tiny_v1", "teachers_tiny_v1"),
        "ce",
        ("0", "1", "2"),
        ("ce", "meal_v1"),
        required=("teachers_tiny_v1",),
        plot="teachers_tiny_v1",
    ),
}


@dataclass(frozen=True)
class Ablation:
    """One ablation at the suite's budget: its sweep, the main table's reference row (method file, seeds
    0-2) and how the ablated key's values read."""

    sweep: str
    base: str
    key: str
    reference: str
    names: dict[str, str]


MAIN_SWEEPS = ("scratch_tiny_v1",)
ABLATIONS: dict[str, Ablation] = {
    "eta (MEAL v1 on the logits)": Ablation(
        "ablation_eta", "meal_v1", "method.eta", "eta 0.1", {"[0.3]": "eta 0.3", "[1.0]": "eta 1.0 (published)"}
    ),
    "adversarial mode (MEAL v1 on the logits)": Ablation(
        "ablation_adversarial",
        "meal_v1",
        "method.adversarial",
        "grl, gradient reversal",
        {"none": "none, no discriminator", "alternating": "alternating steps"},
    ),
    "similarity (MEAL v1 on the logits)": Ablation(
        "ablation_similarity", "meal_v1", "method.similarity", "ce, soft cross-entropy", {"l2": "l2 on the logits"}
    ),
    "LR schedule (MEAL v1 on the logits)": Ablation(
        "ablation_schedule", "meal_v1", "schedule", "cosine", {"multistep": "step: x0.1 for the last epoch"}
    ),
    "gamma (MEAL v1 on every block)": Ablation(
        "ablation_gamma",
        "meal_v1_blockwise",
        "method.gamma",
        "published gamma (0.001, 0.01, 0.05, 0.1, 1)",
        {"[0.0,0.0,0.0,0.0,1.0]": "similarity on the logits only"},
    ),
    "distilled blocks (MEAL v1)": Ablation(
        "ablation_out_layer",
        "meal_v1_blockwise",
        "ablation/fmnist_blocks",
        "all five blocks (published)",
        {"hidden_logits": "last hidden block + logits"},
    ),
}


def ablation_table(runs_dir: Path, spec: Ablation, plot: Path | None = None) -> str:
    """The markdown table of one ablation: the reference row from the main table and each alternative,
    with the paired difference to the reference (same seeds). With `plot`, each row's mean and 95%
    interval are drawn there too."""
    sweeps = [runs_dir / s for s in (*MAIN_SWEEPS, spec.sweep)]
    if not all(path.is_dir() for path in sweeps):
        return f"(not run yet: {spec.sweep})"
    try:
        runs = [run for run in collect_runs([str(p) for p in sweeps]) if run.seed in ("0", "1", "2")]
    except ReportError as exc:
        return f"(not run yet: {exc})"
    rows = [row for row in aggregate(runs, "top1") if row.params[METHOD_KEY] == spec.base]
    reference = [row for row in rows if row.params.get("ablation") == "null"]
    if len(reference) != 1:
        return f"(no reference row for {spec.sweep})"
    lines = [
        "| setting | n | test top-1 | Δ vs reference | 95% CI of Δ | p | val top-1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ordered = [reference[0], *(row for row in rows if row is not reference[0])]
    names = [spec.reference + " (reference)"]
    names += [spec.names.get(row.params.get(spec.key, ""), row.params.get(spec.key, "")) for row in ordered[1:]]
    if plot is not None:  # the same rows under their readable names
        named = [dataclasses.replace(row, params={"setting": name}) for row, name in zip(ordered, names, strict=True)]
        plot_configurations(named, plot, "top1", baseline=named[0])
    for row, name, comparison in zip(ordered, names, comparisons(ordered, reference[0], "top1"), strict=True):
        cells = [name, str(row.n), format_summary(row.stats["top1"])]
        if comparison is None:
            cells += ["", "", ""]
        else:
            cells += [
                f"{comparison.diff:+.2f}",
                format_interval(comparison.low, comparison.high),
                format_p(comparison.p),
            ]
        cells.append(format_summary(row.stats["val_top1"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _label(row: ConfigRow) -> str:
    name = METHODS[row.params[METHOD_KEY]]
    teachers = row.params.get(TEACHERS_KEY)
    return f"{name}, {TEACHER_SETS[teachers]}" if teachers in TEACHER_SETS and TEACHERS_KEY in row.params else name


def _order(row: ConfigRow) -> tuple[int, int]:
    teachers = row.params.get(TEACHERS_KEY)
    rank = list(TEACHER_SETS).index(teachers) if teachers in TEACHER_SETS else -1
    return list(METHODS).index(row.params[METHOD_KEY]), rank


def table(runs_dir: Path, spec: Table, plots: Path | None = None) -> str:
    """The markdown table of one comparison: test and validation top-1 per row, difference to the baseline."""
    present = [str(runs_dir / s) for s in spec.sweeps if (runs_dir / s).is_dir()]
    missing = [s for s in spec.required if not (runs_dir / s).is_dir()]
    if not present or missing:
        return f"(not run yet: {', '.join(missing) or ', '.join(spec.sweeps)})"
    runs = collect_runs(present)
    if spec.seeds is not None:
        runs = [run for run in runs if run.seed in spec.seeds]
    rows = aggregate(runs, "top1")
    if spec.methods is not None:
        rows = [row for row in rows if row.params[METHOD_KEY] in spec.methods]
    try:
        baseline = find_baseline(rows, {METHOD_KEY: spec.baseline})
    except ReportError as exc:
        return f"(no comparison: {exc})"
    lines = [
        f"| run | n | test top-1 | 95% CI | Δ vs {METHODS[spec.baseline]} | 95% CI of Δ | p | val top-1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pairs = sorted(zip(rows, comparisons(rows, baseline, "top1"), strict=True), key=lambda pair: _order(pair[0]))
    if plots is not None and spec.plot is not None:  # the rows under their table names
        named = {id(row): dataclasses.replace(row, params={"run": _label(row)}) for row, _ in pairs}
        plot_configurations([named[id(r)] for r, _ in pairs], plots / f"{spec.plot}.png", "top1", named[id(baseline)])
    for row, comparison in pairs:
        ci = row.interval("top1")
        cells = [
            _label(row),
            str(row.n),
            format_summary(row.stats["top1"]),
            format_interval(ci.low, ci.high) if ci else "-",
        ]
        if comparison is None:
            cells += ["baseline", "", ""]
        else:
            interval = format_interval(comparison.low, comparison.high)
            cells += [f"{comparison.diff:+.2f}", interval, format_p(comparison.p)]
        cells.append(format_summary(row.stats["val_top1"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """Print every table of :data:`TABLES` and :data:`ABLATIONS`; with ``--plots DIR`` also draw each
    ablation's rows into ``DIR/ablation_<sweep>.png``."""
    parser = argparse.ArgumentParser(prog="python experiments/suite/tables.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs_dir", nargs="?", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "runs"
    )
    parser.add_argument("--plots", type=Path, help="folder for the ablations' plots")
    args = parser.parse_args(argv)
    for title, spec in TABLES.items():
        sys.stdout.write(f"### {title}\n\n{table(args.runs_dir, spec, args.plots)}\n\n")
    for title, ablation in ABLATIONS.items():
        plot = args.plots / f"{ablation.sweep}.png" if args.plots else None
        text = ablation_table(args.runs_dir, ablation, plot)
        sys.stdout.write(f"### Ablation: {title}, fmnist_tiny, seeds 0-2\n\n{text}\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
