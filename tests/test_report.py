"""Tests of the sweep report (meal.report): collection, aggregation, CSV/markdown/PNG output, CLI."""

from __future__ import annotations

import csv
import json
import logging
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from meal.report import aggregate, collect_runs, main, plot_series, skipped_runs, swept_parameters
from meal.reporting import csv_columns, parse_overrides

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# gamma -> top1 / top5 / ensemble per seed 0, 1, 2
TOP1 = {"0.1": [71.25, 72.5, 70.75], "1": [74.0, 73.5, 75.25]}
TOP5 = {"0.1": [90.0, 91.5, 90.25], "1": [92.0, 92.75, 91.5]}
ENSEMBLE = {"0.1": [80.0, 80.5, 81.0], "1": [80.0, 80.5, 81.0]}
TEACHERS = {
    "0.1": [
        {"resnet56": 79.0, "vgg19": 81.5},
        {"resnet56": 79.5, "vgg19": 80.0},
        {"resnet56": 82.0, "vgg19": 80.0},
    ],
    "1": [
        {"resnet56": 79.0, "vgg19": 81.5},
        {"resnet56": 79.5, "vgg19": 80.0},
        {"resnet56": 82.0, "vgg19": 80.0},
    ],
}
IMG_PER_S = {"0.1": [1000.0, 1100.0, 1200.0], "1": [900.0, 950.0, 1000.0]}


def make_job(
    job_dir: Path,
    overrides: list[str],
    result: dict[str, Any] | None = None,
    raw: str | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write one job directory the way a multirun leaves it."""
    hydra = job_dir / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (hydra / "config.yaml").write_text(yaml.safe_dump(config or {"seed": 0, "method": {"name": "meal_v2"}}))
    path = job_dir / "result.json"
    path.write_text(raw if raw is not None else json.dumps(result))
    return path


def result(**fields: Any) -> dict[str, Any]:
    base = {
        "method": "meal_v2",
        "student": "resnet20",
        "teachers": ["resnet56", "vgg19"],
        "dataset": "cifar10",
        "seed": 0,
        "epochs": 2,
        "top1": 70.0,
        "top5": 90.0,
        "best_top1": 70.0,
        "teacher_top1": {"resnet56": 79.0},
        "ensemble_top1": 80.0,
        "params": 270000,
        "img_per_s": 1000.0,
        "wall_s": 12.5,
        "wandb_id": "x",
        "status": "completed",
    }
    base.update(fields)
    return base


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """2 gammas x 3 seeds (gamma=1 jobs nested one level deeper), one failed run, one malformed file."""
    root = tmp_path / "multirun" / "2024-01-01" / "12-00-00"
    job = 0
    for gamma, sub in (("0.1", root), ("1", root / "more")):
        for seed in range(3):
            overrides = [
                f"method.gamma={gamma}",
                f"seed={seed}",
                "hydra/launcher=slurm",
                f"paths.output=/scratch/{job}",
                "logger=wandb",
            ]
            make_job(
                sub / str(job),
                overrides,
                result(
                    seed=seed,
                    top1=TOP1[gamma][seed],
                    best_top1=TOP1[gamma][seed] + 0.5,
                    top5=TOP5[gamma][seed],
                    ensemble_top1=ENSEMBLE[gamma][seed],
                    teacher_top1=TEACHERS[gamma][seed],
                    img_per_s=IMG_PER_S[gamma][seed],
                ),
            )
            job += 1
    make_job(root / "6", ["method.gamma=10", "seed=0", "hydra/launcher=slurm"], result(status="failed", top1=None))
    make_job(root / "7", ["method.gamma=10", "seed=1", "hydra/launcher=slurm"], raw='{"top1": 7')
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "overrides": ["method=meal_v2", "method.gamma=0.1,1", "seed=0,1,2"],
                "git_revision": "0123abcd",
                "wandb_group": "gamma-sweep",
            }
        )
    )
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_parse_overrides() -> None:
    parsed = parse_overrides(["method.gamma=[0.1,1]", "+trainer.amp=true", "++x = 2", "~logger", "junk"])
    assert parsed == {"method.gamma": "[0.1,1]", "trainer.amp": "true", "x": "2", "logger": "(deleted)"}


def test_csv_columns_add_the_metric_after_top5() -> None:
    assert csv_columns(["method.gamma"]) == [
        "method.gamma",
        "n",
        "top1_mean",
        "top1_std",
        "top5_mean",
        "top5_std",
        "top1_ci_low",
        "top1_ci_high",
        "ensemble_top1_mean",
        "best_teacher_top1_mean",
        "img_per_s_mean",
        "seeds",
    ]
    cols = csv_columns([], "ensemble_top1")
    assert cols[cols.index("top5_std") + 1 :][:5] == [
        "ensemble_top1_mean",
        "ensemble_top1_std",
        "ensemble_top1_ci_low",
        "ensemble_top1_ci_high",
        "best_teacher_top1_mean",
    ]
    with_baseline = csv_columns(["method"], baseline=True)
    assert with_baseline[-7:] == ["diff_mean", "diff_ci_low", "diff_ci_high", "p_value", "test", "test_n", "seeds"]


def test_report_end_to_end(sweep: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert main([str(sweep)]) == 0
    assert str(sweep / "7" / "result.json") in caplog.text  # the malformed file is named

    rows = read_csv(sweep / "results.csv")
    assert list(rows[0])[:2] == ["method.gamma", "n"]
    assert [r["method.gamma"] for r in rows] == ["0.1", "1"]
    for row in rows:
        g = row["method.gamma"]
        assert int(row["n"]) == 3
        assert float(row["top1_mean"]) == pytest.approx(statistics.mean(TOP1[g]), abs=1e-6)
        assert float(row["top1_std"]) == pytest.approx(statistics.stdev(TOP1[g]), abs=1e-6)
        assert float(row["top5_mean"]) == pytest.approx(statistics.mean(TOP5[g]), abs=1e-6)
        assert float(row["top5_std"]) == pytest.approx(statistics.stdev(TOP5[g]), abs=1e-6)
        assert float(row["ensemble_top1_mean"]) == pytest.approx(statistics.mean(ENSEMBLE[g]), abs=1e-6)
        best = [max(t.values()) for t in TEACHERS[g]]
        assert float(row["best_teacher_top1_mean"]) == pytest.approx(statistics.mean(best), abs=1e-6)
        assert float(row["img_per_s_mean"]) == pytest.approx(statistics.mean(IMG_PER_S[g]), abs=1e-6)
        assert row["seeds"] == "0;1;2"

    md = (sweep / "results.md").read_text()
    for g in TOP1:
        formatted = f"{statistics.mean(TOP1[g]):.2f} ± {statistics.stdev(TOP1[g]):.2f}"
        assert f"| {g} | 3 | {formatted} |" in md
    assert "0123abcd" in md and "gamma-sweep" in md and "method.gamma=0.1,1" in md
    assert "Skipped 2 of 8 runs" in md
    assert "status failed: 1 (`6`)" in md
    assert "unreadable result.json: 1 (`7`)" in md
    assert "plot_method_gamma.png" in md

    png = sweep / "plot_method_gamma.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 5000
    assert sorted(p.name for p in sweep.glob("plot_*.png")) == ["plot_method_gamma.png"]  # no seed/paths plot


@pytest.mark.slow
def test_two_swept_parameters_give_one_line_per_combination(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    gammas, students = ["0.1", "1", "10"], ["resnet20", "mobilenet_v2"]
    job = 0
    for student in students:
        for gamma in gammas:
            for seed in (0, 1):
                top1 = 60.0 + float(gamma) + seed + (5.0 if student == "resnet20" else 0.0)
                make_job(
                    root / str(job),
                    [f"student={student}", f"method.gamma={gamma}", f"seed={seed}"],
                    result(student=student, seed=seed, top1=top1),
                )
                job += 1
    out = tmp_path / "report"
    assert main([str(root), "--out", str(out)]) == 0
    assert {p.name for p in out.glob("*")} >= {
        "results.md",
        "results.csv",
        "plot_method_gamma.png",
        "plot_student.png",
    }
    for png in out.glob("plot_*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000

    runs = collect_runs([root])
    assert swept_parameters(runs) == ["student", "method.gamma"]
    rows = aggregate(runs, "top1")
    assert len(rows) == 6 and all(r.n == 2 for r in rows)

    by_gamma = plot_series(rows, "method.gamma")
    assert [s.others for s in by_gamma] == [{"student": "mobilenet_v2"}, {"student": "resnet20"}]
    for s in by_gamma:
        assert s.x == gammas  # numeric order, not text order
        offset = 5.0 if s.others["student"] == "resnet20" else 0.0
        assert s.mean == pytest.approx([60.0 + float(g) + 0.5 + offset for g in gammas])
        assert s.std == pytest.approx([statistics.stdev([0.0, 1.0])] * 3)
    by_student = plot_series(rows, "student")
    assert len(by_student) == len(gammas)
    assert all(s.x == ["mobilenet_v2", "resnet20"] for s in by_student)


def test_single_seed_and_partial_override_from_config(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    make_job(
        root / "0",
        ["method.gamma=0.5"],
        result(top1=70.0, ensemble_top1=None, teacher_top1={}),
        config={"method": {"gamma": 0.5}},
    )
    make_job(
        root / "1",
        [],
        result(top1=72.0, ensemble_top1=None, teacher_top1={}),
        config={"method": {"gamma": 1.0}},
    )
    make_job(
        root / "2",
        ["method.gamma=1.0"],
        result(top1=74.0, ensemble_top1=None, teacher_top1={}),
        config={"method": {"gamma": 1.0}},
    )
    assert main([str(root), "--metric", "top1"]) == 0
    rows = read_csv(root / "results.csv")
    assert [(r["method.gamma"], r["n"], r["top1_std"], r["ensemble_top1_mean"]) for r in rows] == [
        ("0.5", "1", "", ""),
        ("1.0", "2", repr(statistics.stdev([72.0, 74.0])), ""),
    ]
    md = (root / "results.md").read_text()
    assert "| 0.5 | 1 | 70.00 ± - |" in md
    assert "All 3 runs completed" in md


def test_missing_or_empty_dir_fails_naming_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "no_such_sweep"
    assert main([str(missing)]) != 0
    assert str(missing) in caplog.text
    caplog.clear()
    empty = tmp_path / "empty_sweep"
    (empty / "0" / ".hydra").mkdir(parents=True)
    assert main([str(empty)]) != 0
    assert str(empty) in caplog.text and "result.json" in caplog.text
    assert not (empty / "results.md").exists()


def test_skipped_runs_grouped_by_reason(sweep: Path) -> None:
    runs = collect_runs([sweep])
    assert len(runs) == 8
    skipped = skipped_runs(runs)
    assert {k: [r.name for r in v] for k, v in skipped.items()} == {
        "status failed": ["6"],
        "unreadable result.json": ["7"],
    }


def method_sweep(root: Path, values: dict[str, list[float]], seeds: dict[str, list[int]] | None = None) -> Path:
    """One job per (method, seed) with the given top1 values, as a multirun over ``method`` leaves it."""
    job = 0
    for method, top1s in values.items():
        for seed, top1 in zip((seeds or {}).get(method, range(len(top1s))), top1s, strict=True):
            make_job(root / str(job), [f"method={method}", f"seed={seed}"], result(method=method, seed=seed, top1=top1))
            job += 1
    return root


def test_baseline_comparison_paired_by_seed(tmp_path: Path) -> None:
    """CSV and markdown carry the hand-computed CI, difference, its CI and p-value (df = 2 closed form)."""
    root = method_sweep(tmp_path / "sweep", {"ce": [90.5, 91.0, 90.6], "kd": [91.0, 91.5, 90.8], "meal_v2": [90.0]})
    assert main([str(root), "--baseline", "method=ce"]) == 0
    rows = {r["method"]: r for r in read_csv(root / "results.csv")}
    ce, kd, v2 = rows["ce"], rows["kd"], rows["meal_v2"]
    mean_ce, sd_ce = statistics.mean([90.5, 91.0, 90.6]), statistics.stdev([90.5, 91.0, 90.6])
    assert float(ce["top1_ci_low"]) == pytest.approx(mean_ce - 4.302653 * sd_ce / 3**0.5, abs=1e-5)
    assert float(ce["top1_ci_high"]) == pytest.approx(mean_ce + 4.302653 * sd_ce / 3**0.5, abs=1e-5)
    assert ce["diff_mean"] == "" and ce["p_value"] == ""
    # differences 0.5, 0.5, 0.2 -> mean 0.4, se 0.1, t 4 (df 2): p = 1 - 4 / sqrt(18)
    assert float(kd["diff_mean"]) == pytest.approx(0.4, abs=1e-9)
    assert float(kd["diff_ci_low"]) == pytest.approx(0.4 - 0.4302653, abs=1e-5)
    assert float(kd["diff_ci_high"]) == pytest.approx(0.4 + 0.4302653, abs=1e-5)
    assert float(kd["p_value"]) == pytest.approx(1 - 4 / 18**0.5, abs=1e-9)
    assert (kd["test"], kd["test_n"]) == ("paired t", "3")
    # one run against three: a difference but no test
    assert float(v2["diff_mean"]) == pytest.approx(90.0 - mean_ce, abs=1e-9)
    assert (v2["p_value"], v2["test"], v2["test_n"], v2["top1_ci_low"]) == ("", "Welch t", "1;3", "")

    md = (root / "results.md").read_text()
    assert "Baseline: `method=ce`" in md
    kd_row = "| kd | 3 | 91.10 ± 0.36 | 90.00 ± 0.00 | [90.20, 92.00] | +0.40 | [-0.03, 0.83] | 0.0572 | paired t (3) |"
    assert kd_row in md
    assert "| ce | 3 | 90.70 ± 0.26 | 90.00 ± 0.00 | [90.04, 91.36] | baseline |" in md
    png = root / "configurations_top1.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000


def test_baseline_welch_when_seeds_differ(tmp_path: Path) -> None:
    root = method_sweep(
        tmp_path / "sweep", {"ce": [2.0, 4.0], "kd": [1.0, 2.0, 3.0, 4.0]}, seeds={"ce": [7, 8], "kd": [0, 1, 2, 3]}
    )
    assert main([str(root), "--baseline", "method=ce"]) == 0
    kd = {r["method"]: r for r in read_csv(root / "results.csv")}["kd"]
    se2 = (5 / 3) / 4 + 2.0 / 2
    df = se2**2 / (((5 / 3) / 4) ** 2 / 3 + (2.0 / 2) ** 2)
    assert (kd["test"], kd["test_n"]) == ("Welch t", "4;2")
    assert float(kd["diff_mean"]) == pytest.approx(-0.5, abs=1e-12)
    assert df == pytest.approx(1.8971553, abs=1e-6)
    assert float(kd["diff_ci_high"]) - float(kd["diff_mean"]) > 0.5 * 4.302653  # wider than a df=2 interval


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("method=dkd", "no configuration matches"),
        ("student=x", "not a swept parameter"),
        ("method", "expected KEY=VALUE"),
    ],
)
def test_bad_baseline_is_one_error_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spec: str, expected: str
) -> None:
    root = method_sweep(tmp_path / "sweep", {"ce": [90.0, 91.0], "kd": [91.0, 92.0]})
    assert main([str(root), "--baseline", spec]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("error: --baseline") and expected in errors[0]
    assert not (root / "results.md").exists()
