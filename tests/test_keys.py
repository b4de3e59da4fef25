"""The keys that never say what a run computes, defined once (meal.keys) and used by the report, W&B names
and the run directory."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from meal import keys, rundir
from meal.report import collect_runs, main, swept_parameters
from meal.reporting import EXCLUDED_KEYS


def _job(job_dir: Path, overrides: list[str], top1: float) -> None:
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "method": {"name": "ce"}}))
    (job_dir / "result.json").write_text(
        json.dumps(
            {
                "method": "ce",
                "student": "fmnist_tiny",
                "teachers": [],
                "dataset": "fashion_mnist",
                "seed": 0,
                "epochs": 1,
                "top1": top1,
                "top5": 99.0,
                "best_top1": top1,
                "teacher_top1": {},
                "ensemble_top1": None,
                "params": 8600,
                "img_per_s": 1000.0,
                "wall_s": 1.0,
                "status": "completed",
            }
        )
    )


def test_report_over_sweeps_differing_only_in_a_logging_key_lists_no_such_key(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for sweep, every in ((first, 10), (second, 50)):
        for job, lr in enumerate(("0.05", "0.1")):
            _job(
                sweep / str(job),
                [f"optim.lr={lr}", f"trainer.log_every_steps={every}", "trainer.threads=1", "data.workers=2", "seed=0"],
                80.0 + float(lr) * 10,
            )
    runs = collect_runs([first, second])
    assert swept_parameters(runs) == ["optim.lr"]
    out = tmp_path / "report"
    assert main([str(first), str(second), "--out", str(out)]) == 0
    text = (out / "results.md").read_text()
    assert "Swept parameters: `optim.lr`." in text
    assert "log_every_steps" not in text and "trainer.threads" not in text
    assert "log_every_steps" not in (out / "results.csv").read_text().splitlines()[0]


def test_one_definition_serves_the_report_the_run_directory_and_names() -> None:
    assert keys.key_patterns(keys.NOT_SWEPT_KEYS) == EXCLUDED_KEYS
    assert rundir.RESTART_FREE_KEYS is keys.RESTART_FREE_KEYS
    assert set(keys.EXECUTION_KEYS) <= set(keys.RESTART_FREE_KEYS)
    for key in (
        "seed",
        "trainer.log_every_steps",
        "hydra/launcher",
        "hydra.sweep.dir",
        "logger.mode",
        "logger",
        "paths.zoo",
        "cluster",
        "resources.timeout_min",
        "data.workers",
        "trainer.threads",
    ):
        assert keys.is_not_swept(key), key
    for key in (
        "optim.lr",
        "trainer.max_steps",
        "data.root",
        "trainer.epochs",
        "method",
        "data.val_split",
        "seedling",
        "loggers_extra.x",
    ):
        assert not keys.is_not_swept(key), key


def test_a_run_name_leaves_out_logging_and_thread_keys(monkeypatch) -> None:
    from types import SimpleNamespace

    from meal.tracking import naming

    hydra = SimpleNamespace(
        overrides=SimpleNamespace(
            task=["optim.lr=0.1", "trainer.log_every_steps=5", "trainer.threads=2", "+logger.mode=offline", "seed=3"]
        ),
        mode="RunMode.RUN",
        sweep=SimpleNamespace(dir="/nowhere"),
    )
    monkeypatch.setattr(naming, "_hydra_config", lambda: hydra)
    cfg = SimpleNamespace(
        method=SimpleNamespace(name="ce"),
        student=SimpleNamespace(arch="fmnist_tiny"),
        teachers=SimpleNamespace(members=[], name="none"),
        seed=3,
    )
    assert naming.run_name(cfg) == "ce fmnist_tiny optim.lr=0.1 s3"
