"""A search through `python launch.py -m search=fmnist_meal_v2`: refused on the test set, run, stopped and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tests.conftest import needs_fashion_mnist, run_launch

# every test starts launch.py in a subprocess
pytestmark = pytest.mark.slow

#: the example search at a test's size: quickstart teachers trained by the first trial on 1,000 images
TINY = [
    "-m",
    "search=fmnist_meal_v2",
    "hydra.sweeper.n_jobs=1",
    "teachers.train_missing=true",
    "teachers.training.train_subset=1000",
    "teachers.training.epochs=1",
    "data.train_subset=1000",
    "data.test_subset=500",
    "trainer.epochs=1",
    "logger=none",
]


def test_search_on_the_test_set_is_refused_and_writes_no_study(meal_env: dict[str, str], tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_launch([*TINY, "data.val_split=0", f"hydra.sweep.dir={sweep_dir}"], meal_env, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].split("error: ", 1)[1].startswith(
        "data.val_split: is 0, so this search (OptunaSweeper) would tune on the test set"
    ), errors
    assert not (sweep_dir / "optuna.db").exists() and not list(sweep_dir.glob("*/result.json"))


def _results(sweep_dir: Path) -> dict[int, tuple[float, bytes]]:
    return {int(p.parent.name): (p.stat().st_mtime_ns, p.read_bytes()) for p in sweep_dir.glob("*/result.json")}


@needs_fashion_mnist
def test_search_runs_resumes_and_reports_its_best_trial(meal_env: dict[str, str], tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    first = run_launch([*TINY, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep_dir}"], meal_env, timeout=1800)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _results(sweep_dir)
    assert sorted(before) == [0, 1]

    # started again with a larger budget: trials 0 and 1 are kept, only trial 2 runs
    again = run_launch([*TINY, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep_dir}"], meal_env, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    after = _results(sweep_dir)
    assert sorted(after) == [0, 1, 2]
    assert {n: after[n] for n in (0, 1)} == before, "a completed trial ran again"

    study = optuna.load_study(study_name="search_fmnist_meal_v2", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
    on_disk = {n: json.loads(raw) for n, (_, raw) in after.items()}
    for trial in study.trials:
        result = on_disk[trial.number]
        assert result["objective"] == "val_top1" and trial.value == pytest.approx(result["val_top1"])
        assert set(trial.params) == {"method.temperature", "method.eta", "optim.lr"}
        assert 1.0 <= trial.params["method.temperature"] <= 8.0 and 0.01 <= trial.params["optim.lr"] <= 0.3

    search = json.loads((sweep_dir / "search.json").read_text())
    best = max(on_disk, key=lambda n: on_disk[n]["val_top1"])
    assert search["best_value"] == pytest.approx(on_disk[search["best_trial"]]["val_top1"])
    assert search["best_value"] == pytest.approx(on_disk[best]["val_top1"])
    assert (search["n_trials"], search["n_complete"], search["direction"]) == (3, 3, "maximize")
    assert Path(search["best_job_dir"]) == sweep_dir / str(search["best_trial"])
    assert [t["job_dir"] for t in search["trials"]] == [str(sweep_dir / str(n)) for n in range(3)]

    report = run_report(sweep_dir, meal_env)
    assert report.returncode == 0, report.stderr[-2000:]
    assert f"best trial {search['best_trial']}:" in report.stderr
    assert json.loads((sweep_dir / "best_trial.json").read_text())["trial"] == search["best_trial"]
    assert (sweep_dir / "optimization_history.png").stat().st_size > 0
    assert "## Search" in (sweep_dir / "results.md").read_text()


def run_report(sweep_dir: Path, env: dict[str, str]):
    import subprocess
    import sys

    from tests.conftest import REPO

    return subprocess.run(
        [sys.executable, "-m", "meal.report", str(sweep_dir), "--metric", "val_top1"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
