"""``python -m meal.evaluate <run_dir | checkpoint | zoo entry> [--json] [overrides...]``.

Evaluates a trained student on the test split (or the validation split, ``--split val``) of the data it
was trained on, or of ``data=<option>``: top-1/top-5, per-class top-1, expected calibration error
(15 equal-width bins) and NLL; with a teacher set (``teachers=<option>``, or the run's own for a
distillation run) also each teacher's and the ensemble's top-1 and the student's top-1 agreement with
each teacher and with their mean-softmax ensemble. Prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from typing import Any

from meal.entry import quiet_interrupt_at_start, run_entry_point

log = logging.getLogger("meal.evaluate")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m meal.evaluate``."""
    parser = argparse.ArgumentParser(
        prog="python -m meal.evaluate",
        description="Evaluate a trained student: accuracy, per-class accuracy, calibration (ECE, NLL) and "
        "top-1 agreement with a teacher set.",
    )
    parser.add_argument("target", help="a run directory, a checkpoint file, or a zoo entry (file or <dataset>/<name>)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="data=<option>, teachers=<option> (none: no teachers) or a dotted key, e.g. data.test_subset=1000",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="split to evaluate (default: test)")
    parser.add_argument(
        "--checkpoint",
        choices=("last", "best"),
        default="last",
        help="which checkpoint of a run directory (default: last, the final weights)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    return parser


def evaluate(
    target: str, overrides: Sequence[str] = (), split: str = "test", which: str = "last", device_name: str = "auto"
) -> dict[str, Any]:
    """Evaluate the student named by `target`; return every figure as a JSON-ready dict."""
    from pathlib import Path

    from meal.data import build_data
    from meal.data.checks import check_not_empty
    from meal.engine.environment import select_device
    from meal.errors import ConfigError
    from meal.evaluation import ECE_BINS, evaluate_classifier
    from meal.evaluation.overrides import apply_overrides
    from meal.evaluation.target import resolve_target
    from meal.methods import method_class
    from meal.models import build_model
    from meal.teachers import load_teachers

    found = resolve_target(target, which)
    cfg, replaced = apply_overrides(found.cfg, overrides)
    device = select_device(device_name)
    data = build_data(cfg.data, Path(cfg.paths.data_dir), int(cfg.get("seed", 0)), device)
    check_not_empty(cfg.data, data)
    batches = data.test if split == "test" else data.val
    if batches is None:
        raise ConfigError("data.val_split", "is 0: there is no validation split", "set data.val_split, or --split test")
    student = build_model(found.arch, data.num_classes, data.in_channels, data.image_size, taps=[])
    try:
        student.load_state_dict(found.state_dict)
    except RuntimeError as exc:
        raise ConfigError(
            "data",
            f"{found.weights_file} does not fit {found.arch} with {data.num_classes} classes "
            f"and {data.in_channels} input channels ({str(exc).splitlines()[0]})",
            "evaluate it on the data it was trained for",
        ) from exc
    student.to(device)
    uses_teachers = "teachers" in replaced or method_class(str(cfg.method.name)).uses_teachers
    teachers = load_teachers(cfg, data, device) if uses_teachers and cfg.teachers.members else []
    figures = evaluate_classifier(student, batches, data.num_classes, [(t.name, t.model) for t in teachers])
    return {
        "target": target,
        "weights": str(found.weights_file),
        "kind": found.kind,
        "student": found.arch,
        "dataset": cfg.data.name,
        "split": split,
        "teacher_set": cfg.teachers.name if teachers else None,
        "teachers": [t.name for t in teachers],
        "ece_bins": ECE_BINS,
        **figures,
    }


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def format_table(report: dict[str, Any]) -> str:
    """The report as readable text: summary figures, per-class top-1, and teachers with agreement."""
    lines = [
        f"{report['student']} on {report['dataset']} ({report['split']}, {report['n']} images): {report['weights']}",
        "",
        *_table(
            [
                ("metric", "value"),
                ("top1 (%)", _cell(report["top1"])),
                ("top5 (%)", _cell(report["top5"])),
                ("NLL", _cell(report["nll"], 4)),
                (f"ECE ({report['ece_bins']} bins, %)", _cell(report["ece"])),
            ]
        ),
        "",
        *_table([("class", "top1 (%)"), *((c, _cell(v)) for c, v in report["per_class_top1"].items())]),
    ]
    if report["teachers"]:
        rows = [("model", "top1 (%)", "agreement (%)")]
        rows += [
            (f"teacher {name}", _cell(report["teacher_top1"][name]), _cell(report["teacher_agreement"][name]))
            for name in report["teachers"]
        ]
        rows.append(("ensemble (mean softmax)", _cell(report["ensemble_top1"]), _cell(report["ensemble_agreement"])))
        lines += ["", f"teacher set {report['teacher_set']}: the student's top-1 agreement with each", *_table(rows)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok; a user error ends in one ``error:`` line and status 2)."""
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    report = evaluate(args.target, args.overrides, args.split, args.checkpoint, args.device)
    sys.stdout.write(json.dumps(report, indent=2) + "\n" if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    quiet_interrupt_at_start()
    sys.exit(run_entry_point(main))
