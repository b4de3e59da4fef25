"""The GPU speed table: the project's two GPU benchmark cases, each in the fp32_eager and fast regimes.

    python experiments/bench/gpu_table.py --out gpu_table.md --json-out gpu_table.jsonl [extra overrides]

Runs ``python -m meal.bench --json --random-teachers --regimes fp32_eager,fast`` once per case (one
subprocess each) on CIFAR-shaped synthetic data (3x32x32, 10 classes, pad-crop-flip augmentation):

(a) MEAL V2: resnet18 student, teachers resnet18, vgg19_bn, densenet121 (``teachers=cifar_trio``),
    modes ce, online and cached (the exact cache of every image's 9x9x2 augmentation variants is built
    first, untimed: ``--train-size`` keeps that short);
(b) the published MEAL v1 five-teacher ensemble -> densenet_cifar (``paper=meal_cifar10_ensemble``),
    modes ce and online.

Writes a markdown table (device above it; img/s per regime, the speed-up fast / fp32_eager and the peak
memory per regime for each case and mode) to stdout and to ``--out``, and the bench's JSON objects, one
per case, to ``--json-out``. Extra Hydra overrides (e.g. ``trainer.compile=false``) go to every case and
win over a case's or a regime's override of the same key. ``--dry-run`` prints the commands only.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meal.bench import BASELINE, FAST, merge_overrides

log = logging.getLogger("gpu_table")

CIFAR_SYNTHETIC = (
    "data=synthetic",
    "data.in_channels=3",
    "data.image_size=32",
    "data.num_classes=10",
    "data.mean=[0.4914,0.4822,0.4465]",
    "data.std=[0.2023,0.1994,0.2010]",
    "data.augment=pad_crop_flip",
    "data.pad=4",
)
CASES: dict[str, tuple[str, ...]] = {
    "a": ("method=meal_v2", "student=resnet18", "teachers=cifar_trio", *CIFAR_SYNTHETIC),  # MEAL V2, 3 teachers
    "b": ("paper=meal_cifar10_ensemble", *CIFAR_SYNTHETIC, "trainer.epochs=1"),  # MEAL v1, 5 teachers
}


def bench_command(case: str, args: argparse.Namespace) -> list[str]:
    """The ``python -m meal.bench`` argument list (without the interpreter) of one case."""
    overrides = (*CASES[case], f"data.batch_size={args.batch_size}", f"data.train_size={args.train_size}")
    profile = [] if args.profile is None else ["--profile", str(args.profile / case)]
    return [
        "-m",
        "meal.bench",
        "--json",
        "--random-teachers",
        "--regimes",
        args.regimes,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        *profile,
        *merge_overrides(overrides, args.extra),
    ]


def _label(regime: str) -> str:
    return regime.replace("_", " ")


def _peak(result: dict[str, Any], mode: str) -> float | None:
    """A mode's peak memory in MB: its own on CUDA, the process's max RSS on the CPU."""
    return result.get(f"{mode}_peak_memory_mb", result.get("peak_memory_mb"))


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown: the device, then one row per case and mode (img/s per regime, speed-up, peak MB per regime)."""
    first = records[0]
    regimes = list(first["regimes"])
    speedup = BASELINE in regimes and FAST in regimes
    kinds = sorted({r["peak_memory_kind"] for rec in records for r in rec["regimes"].values()})
    lines = [
        f"Device: {first['device']}, torch {first['torch']}; batch {first['batch_size']}, "
        f"{first['timed_steps']} timed steps per mode ({first['statistic']}); peak memory: {', '.join(kinds)}",
        "",
    ]
    busy = any(
        "device_busy" in row
        for rec in records
        for r in rec["regimes"].values()
        for row in (r.get("profile") or {}).values()
    )
    header = [
        "case",
        "mode",
        *(f"img/s ({_label(n)})" for n in regimes),
        *(["speed-up"] if speedup else []),
        *(f"peak MB ({_label(n)})" for n in regimes),
        *(f"GPU busy ({_label(n)})" for n in regimes if busy),
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rec in records:
        for mode in rec["modes"]:
            row = [f"{rec['case']}: {rec['method']} {rec['student']} <- {', '.join(rec['teachers'])}", mode]
            row += [_cell(rec["regimes"][n].get(f"{mode}_img_per_s"), 1) for n in regimes]
            if speedup:
                row.append(_cell((rec.get("speedup") or {}).get(mode), 2))
            row += [_cell(_peak(rec["regimes"][n], mode), 0) for n in regimes]
            if busy:
                row += [
                    _cell(((rec["regimes"][n].get("profile") or {}).get(mode) or {}).get("device_busy"), 2)
                    for n in regimes
                ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the cases, write the table and the JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--regimes", default=f"{BASELINE},{FAST}", help="passed to python -m meal.bench")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-size", type=int, default=4096, help="synthetic training images")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per mode and regime")
    parser.add_argument(
        "--warmup",
        type=int,
        default=20,
        help="untimed steps per mode first (compilation: case b draws one teacher per step)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--json-out", type=Path, default=None, help="write the bench's JSON objects here")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="profile each mode after timing; operator tables under PROFILE/<case>/<regime>/",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the bench commands, run nothing")
    parser.add_argument("extra", nargs="*", help="hydra overrides for every case (win over the case's)")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not cases or any(c not in CASES for c in cases):
        parser.error(f"--cases: choose from {', '.join(CASES)}")
    if args.dry_run:
        sys.stdout.write("".join(shlex.join(["python", *bench_command(c, args)]) + "\n" for c in cases))
        return 0
    records = []
    for case in cases:
        command = bench_command(case, args)
        log.info("case %s: %s", case, shlex.join(["python", *command]))
        proc = subprocess.run([sys.executable, *command], stdout=subprocess.PIPE, text=True)  # stderr: the log
        if proc.returncode != 0:
            log.error("case %s failed (exit status %d)", case, proc.returncode)
            return proc.returncode
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        records.append({"case": case, "command": shlex.join(["python", *command]), **result})
    if args.json_out:
        args.json_out.write_text("".join(json.dumps(r) + "\n" for r in records))
    table = render_table(records)
    if args.out:
        args.out.write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[%(asctime)s][%(name)s] - %(message)s")
    sys.exit(main())
