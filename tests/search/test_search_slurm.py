"""A search on Slurm (`tests/slurm/up.sh` starts the single-node test cluster): one job array per batch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import REPO, needs_fashion_mnist
from tests.slurm_utils import slurm_available

SLURM_UP, SLURM_REASON = slurm_available()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    needs_fashion_mnist,
    pytest.mark.skipif(not SLURM_UP, reason=SLURM_REASON),
]


def test_each_batch_of_trials_is_one_job_array(tmp_path: Path, meal_env: dict[str, str]) -> None:
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=slurm",
        "cluster=localhost",
        "resources=cpu",
        "hydra/sweeper=optuna_random",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "experiment=slurm_search",
        "method=ce",
        "teachers=none",
        "optim.lr=tag(log,interval(0.01,0.3))",
        "data.val_split=0.1",
        "data.train_subset=500",
        "data.test_subset=200",
        "trainer.epochs=1",
        "logger=none",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    result = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args],
        env=meal_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    scripts = sorted((sweep_dir / ".submitit").glob("*/*_submission.sh"))
    assert len(scripts) == 2, scripts  # trials 0-1 and 2-3: two arrays of two tasks
    for script in scripts:
        assert "#SBATCH --array=0-1%2" in script.read_text()
    arrays = sorted(int(s.parent.name) for s in scripts)
    tasks = sorted(p.name for p in (sweep_dir / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name))
    assert tasks == [f"{a}_{i}" for a in arrays for i in range(2)]

    study = optuna.load_study(study_name="slurm_search", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    for trial in study.trials:
        on_disk = json.loads((sweep_dir / str(trial.number) / "result.json").read_text())
        assert trial.value == pytest.approx(on_disk["val_top1"])
        lr = json.loads((sweep_dir / "search.json").read_text())["trials"][trial.number]["params"]["optim.lr"]
        assert lr == trial.params["optim.lr"]
