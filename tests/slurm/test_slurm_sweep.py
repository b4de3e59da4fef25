"""Sweeps through `hydra/launcher=slurm` on a real Slurm cluster (`tests/slurm/up.sh` starts one).

A tiny Fashion-MNIST sweep runs as a job array and is summarised by `python -m meal.report`; a job sent
the preemption signal mid-training saves a checkpoint at the signal, is requeued by submitit, resumes
from that checkpoint in the same run directory and continues the same W&B run.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from meal.tracking import read_wandb_run
from tests.conftest import REPO, needs_fashion_mnist
from tests.slurm_utils import slurm_available

SLURM_UP, SLURM_REASON = slurm_available()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    needs_fashion_mnist,
    pytest.mark.skipif(not SLURM_UP, reason=SLURM_REASON),
]

SWEEP_TIMEOUT_S = 480
JOBS_GONE_S = 20
POLL_S = 0.2
SLURM_ARGS = [
    "hydra/launcher=slurm",
    "cluster=localhost",
    "resources=cpu",
    "method=ce",
    "teachers=none",
    "data.test_subset=500",
    "logger=wandb",
]
JOB_ID = re.compile(r"\d+(_\d+)?")
SUBMITIT_TIME = re.compile(r"submitit \w+ \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\) - Starting with JobEnvironment")


@pytest.fixture
def slurm_env(meal_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The driver's environment, which sbatch passes on to the jobs: no W&B key or mode, so W&B is offline."""
    env = {k: v for k, v in meal_env.items() if not k.startswith("WANDB_")}
    home = tmp_path / "home"
    home.mkdir()
    env.update({"HOME": str(home), "NETRC": str(home / ".netrc"), "WANDB_SILENT": "true"})
    return env


class Sweep:
    """One `python launch.py -m ...` driver process and its sweep directory."""

    def __init__(self, sweep_dir: Path, args: list[str], env: dict[str, str]) -> None:
        self.dir = sweep_dir
        self.log_path = sweep_dir.parent / f"{sweep_dir.name}-driver.log"
        self.started = time.monotonic()
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in wait/stop)
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "launch.py"), "-m", *args, f"hydra.sweep.dir={sweep_dir}"],
            env=env,
            cwd=sweep_dir.parent,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def job_ids(self) -> list[str]:
        """Slurm ids of the sweep's jobs: `<id>` for a single job, `<array>_<i>` for array tasks."""
        folder = self.dir / ".submitit"
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        ids = [n for n in names if JOB_ID.fullmatch(n)]
        return sorted(n for n in ids if "_" in n or not any(m.startswith(f"{n}_") for m in ids))

    def queued(self) -> bool:
        """Whether Slurm still holds (pending, running or completing) a job of the sweep."""
        arrays = sorted({job_id.split("_")[0] for job_id in self.job_ids()})
        if not arrays:
            return True  # not submitted yet
        out = subprocess.run(
            ["squeue", "--noheader", "--format=%i", f"--jobs={','.join(arrays)}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return bool(out.stdout.strip())

    def wait(self, timeout: float = SWEEP_TIMEOUT_S) -> float:
        """Wait for the driver; returns its wall time. Fails early when the jobs have left the queue but the
        driver still waits (a job that ended without a result: submitit's driver would wait forever)."""
        deadline = self.started + timeout
        gone_since: float | None = None
        while self.proc.poll() is None:
            now = time.monotonic()
            assert now < deadline, f"sweep not done after {timeout} s:\n{self.output()[-4000:]}"
            gone_since = None if self.queued() else gone_since or now
            assert gone_since is None or now - gone_since < JOBS_GONE_S, (
                f"the jobs left the queue {JOBS_GONE_S} s ago, the driver still waits:\n{self.output()[-4000:]}"
            )
            time.sleep(1.0)
        self._log.close()
        return time.monotonic() - self.started

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        """Cancel what is left of the sweep's jobs and end the driver (after a failure)."""
        ids = self.job_ids()
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, check=False)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def sweeps() -> Iterator[list[Sweep]]:
    started: list[Sweep] = []
    yield started
    for sweep in started:
        sweep.stop()


def _start(sweeps: list[Sweep], sweep_dir: Path, args: list[str], env: dict[str, str]) -> Sweep:
    sweep = Sweep(sweep_dir, args, env)
    sweeps.append(sweep)
    return sweep


def _wait_ok(sweep: Sweep) -> float:
    wall = sweep.wait()
    assert sweep.proc.returncode == 0, sweep.output()[-4000:]
    return wall


def _poll(condition: Callable[[], bool], what: str, sweep: Sweep, timeout: float = SWEEP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert sweep.proc.poll() is None, f"the sweep ended before {what}:\n{sweep.output()[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(POLL_S)


def _epochs(run_dir: Path) -> list[dict]:
    """The complete lines of metrics.jsonl (the job may be writing the next one)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def test_sweep_runs_as_job_array_and_reports(tmp_path: Path, slurm_env: dict[str, str], sweeps: list[Sweep]) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep = _start(
        sweeps,
        sweep_dir,
        [
            *SLURM_ARGS,
            "experiment=slurm_sweep",
            "data.train_subset=1000",
            "trainer.epochs=2",
            "optim.lr=0.05,0.1",
            "seed=0,1",
        ],
        slurm_env,
    )
    wall = _wait_ok(sweep)
    print(f"sweep of 4 jobs on Slurm: {wall:.1f} s wall")

    # One job array of four tasks, two at a time, with submitit's files under <sweep>/.submitit/.
    ids = sweep.job_ids()
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_{i}" for i in range(4)]
    script = (sweep_dir / ".submitit" / array / f"{array}_submission.sh").read_text()
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --partition=debug" in script
    for job_id in ids:
        assert (sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.out").is_file()
        assert (sweep_dir / ".submitit" / job_id / f"{job_id}_0_result.pkl").is_file()

    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["launcher"] == "slurm" and manifest["wandb_group"] == "slurm_sweep/sweep"
    results: dict[str, dict] = {}
    for job in sorted(p for p in sweep_dir.iterdir() if p.name.isdigit()):
        result = json.loads((job / "result.json").read_text())
        results[job.name] = result
        assert result["status"] == "completed" and result["epochs"] == 2
        # W&B: one offline run per job, in the sweep's group, named by the swept values and the seed,
        # with the job's resolved config.
        run = read_wandb_run(job)
        config = run["config"]
        lr = config["optim"]["lr"]
        assert lr == _job_lr(job) and config["seed"] == result["seed"]
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1 and len(run["segments"]) == 1
        assert run["run_id"] == result["wandb_id"] == (job / "wandb_id").read_text().strip()
        assert run["group"] == manifest["wandb_group"]
        assert run["name"] == f"ce fmnist_tiny optim.lr={lr} s{result['seed']}"
        assert run["job_type"] == "train" and run["exit_code"] == 0
        assert config["method"]["name"] == "ce" and config["paths"]["output_dir"] == str(job)
        assert run["summary"]["top1"] == result["top1"]
    assert sorted(results) == ["0", "1", "2", "3"]
    assert len({r["wandb_id"] for r in results.values()}) == 4

    report = subprocess.run(
        [sys.executable, "-m", "meal.report", str(sweep_dir)],
        env=slurm_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    assert (sweep_dir / "plot_optim_lr.png").read_bytes().startswith(b"\x89PNG")
    table = (sweep_dir / "results.md").read_text()
    assert "| optim.lr | n | top1 | top5 |" in table and "W&B group: `slurm_sweep/sweep`" in table
    with open(sweep_dir / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["optim.lr"] for row in rows] == ["0.05", "0.1"]
    for row in rows:
        runs = [r for job, r in results.items() if _job_lr(sweep_dir / job) == float(row["optim.lr"])]
        top1 = [r["top1"] for r in runs]
        assert row["n"] == "2" and row["seeds"] == "0;1"
        assert float(row["top1_mean"]) == pytest.approx(statistics.fmean(top1), abs=1e-6)
        assert float(row["top1_std"]) == pytest.approx(statistics.stdev(top1), abs=1e-6)
        assert float(row["top5_mean"]) == pytest.approx(statistics.fmean(r["top5"] for r in runs), abs=1e-6)
        assert float(row["img_per_s_mean"]) == pytest.approx(statistics.fmean(r["img_per_s"] for r in runs), abs=1e-6)
        assert row["ensemble_top1_mean"] == "", "no teachers, no ensemble"
        mean, std = statistics.fmean(top1), statistics.stdev(top1)
        assert f"| {row['optim.lr']} | 2 | {mean:.2f} ± {std:.2f} |" in table


def _job_lr(job: Path) -> float:
    overrides = (job / ".hydra" / "overrides.yaml").read_text()
    return float(re.search(r"optim\.lr=([0-9.]+)", overrides).group(1))  # type: ignore[union-attr]


@pytest.mark.parametrize("signals", [("USR2",), ("TERM", "USR2")], ids=["usr2", "term-then-usr2"])
def test_preempted_job_is_requeued_and_resumes_from_the_signal(
    tmp_path: Path, slurm_env: dict[str, str], sweeps: list[Sweep], signals: tuple[str, ...]
) -> None:
    """USR2 is what Slurm sends `signal_delay_s` before the time limit; a preemption sends SIGTERM first."""
    epochs, steps_per_epoch = 6, 32  # 4000 images, batch 128
    total = epochs * steps_per_epoch
    sweep_dir = tmp_path / "preempt"
    sweep = _start(
        sweeps,
        sweep_dir,
        [
            *SLURM_ARGS,
            "experiment=slurm_preempt",
            "data.train_subset=4000",
            f"trainer.epochs={epochs}",
            "trainer.log_every_steps=1",
            "seed=0",
        ],
        slurm_env,
    )
    run_dir = sweep_dir / "0"

    _poll(lambda: len(_epochs(run_dir)) >= 1, "finished epoch 1", sweep)
    wandb_id = (run_dir / "wandb_id").read_text().strip()
    (job_id,) = sweep.job_ids()
    # scancel --signal sends to the job steps (srun runs the training process as one), not the batch shell.
    for sig in signals:
        if sig != signals[0]:
            time.sleep(1.0)  # a preemption: SIGTERM, then the signal; the job must train on in between
        subprocess.run(["scancel", f"--signal={sig}", job_id], check=True)
    signalled = datetime.now()
    assert len(_epochs(run_dir)) < epochs, "signalled mid-training"

    _wait_ok(sweep)
    log = (sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()

    starts = [datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f") for t in SUBMITIT_TIME.findall(log)]
    assert len(starts) == 2, "one requeue, two starts"
    assert "Caught signal SIGUSR2" in log and f"Requeued job {job_id}" in log
    saved = [int(s) for s in re.findall(r"checkpoint saved at step (\d+) after a termination signal", log)]
    resumed = re.findall(r"resumed from (\S+): epoch (\d+), step (\d+) of (\d+)", log)
    assert len(saved) == 1 and len(resumed) == 1, log[-4000:]
    step = saved[0]
    path, epoch, resumed_step, of = resumed[0]
    assert Path(path) == run_dir / "checkpoints" / "last.pt"
    assert steps_per_epoch < step < total, "saved mid-training, after epoch 1"
    done_before = (step - 1) // steps_per_epoch  # epochs recorded before the signal (S may end an epoch)
    assert (int(resumed_step), int(epoch), int(of)) == (step, done_before + 1, total)
    print(
        f"{'+'.join(signals)}: checkpoint at step {step}; the requeued job started again "
        f"{(starts[1] - signalled).total_seconds():.1f} s after the signal"
    )

    # Every epoch ran once: epoch lines before the restart are those finished before the signal.
    first, second = log.split("resumed from", 1)
    epoch_line = re.compile(rf"\[meal\.engine\.trainer\]\[INFO\] - epoch (\d+)/{epochs} ")
    assert [int(e) for e in epoch_line.findall(first)] == list(range(1, done_before + 1))
    assert [int(e) for e in epoch_line.findall(second)] == list(range(done_before + 1, epochs + 1))
    metrics = _epochs(run_dir)
    assert [m["epoch"] for m in metrics] == list(range(1, epochs + 1))
    assert [m["step"] for m in metrics] == [steps_per_epoch * e for e in range(1, epochs + 1)]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == total and result["epochs"] == epochs

    # One W&B run across both starts.
    assert (run_dir / "wandb_id").read_text().strip() == wandb_id == result["wandb_id"]
    run = read_wandb_run(run_dir)
    assert run["run_id"] == wandb_id
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{wandb_id}/run-{wandb_id}.wandb"))) == 2
    assert len(run["segments"]) == 2 and run["segments"][1] == {**run["segments"][1], "exit_code": 0}
    logged = [row["_step"] for row in run["history"] if "train/loss" in row]
    assert logged[-(total - step) :] == list(range(step + 1, total + 1)), "the second start goes on at step S+1"
    assert run["summary"]["top1"] == result["top1"] and run["summary"]["steps"] == total
    if signals == ("USR2",):
        # The first start was marked preempting and closed before the requeue: every step logged once.
        assert [(s["preempting"], s["exit_code"]) for s in run["segments"]] == [(True, 128 + 12), (False, 0)]
        assert logged == list(range(1, total + 1))
        assert [row["_step"] for row in run["history"] if "epoch/top1" in row] == [m["step"] for m in metrics]
    # After a SIGTERM, W&B's own service process has exited (it does not survive SIGTERM), so what the
    # first start logged last may be missing from its W&B file; metrics.jsonl and the checkpoint are whole.


def test_timeout_requeues_are_bounded_by_max_num_timeout(
    tmp_path: Path, slurm_env: dict[str, str], sweeps: list[Sweep]
) -> None:
    """submitit counts a signal as a timeout once a job has run min(0.8 * timeout_min, timeout_min - 10)
    minutes, so with timeout_min=5 every USR2 is one: with max_num_timeout=1 the first is requeued, the
    second is not. The run keeps the checkpoint saved at the second signal; the same sweep started
    again goes on from it."""
    epochs, steps_per_epoch = 4, 32
    sweep_dir = tmp_path / "timeouts"
    args = [
        *SLURM_ARGS,
        "experiment=slurm_timeout",
        "data.train_subset=4000",
        f"trainer.epochs={epochs}",
        "resources.timeout_min=5",
        "resources.max_num_timeout=1",
        "seed=0",
    ]
    sweep = _start(sweeps, sweep_dir, args, slurm_env)
    run_dir = sweep_dir / "0"
    wandb_id = None
    for finished_epochs in (1, 2):
        _poll(lambda n=finished_epochs: len(_epochs(run_dir)) >= n, f"finished epoch {finished_epochs}", sweep)
        wandb_id = wandb_id or (run_dir / "wandb_id").read_text().strip()
        (job_id,) = sweep.job_ids()
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)

    sweep.wait()
    assert sweep.proc.returncode != 0, "the sweep reports the job that was not requeued"
    log = (sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
    assert len(re.findall(r"submitit INFO \(.*\) - Job has timed out", log)) == 2
    assert f"Requeued job {job_id} (0 remaining timeouts)" in log
    assert "Job not requeued because: timed-out too many times" in log
    assert not (run_dir / "result.json").exists()
    saved = [int(s) for s in re.findall(r"checkpoint saved at step (\d+) after a termination signal", log)]
    assert len(saved) == 2 and steps_per_epoch < saved[0] < saved[1] < epochs * steps_per_epoch
    segments = read_wandb_run(run_dir)["segments"]
    assert [(s["preempting"], s["exit_code"]) for s in segments] == [(True, 128 + 12)] * 2

    again = _start(sweeps, sweep_dir, args, slurm_env)
    _wait_ok(again)
    (new_id,) = [i for i in again.job_ids() if i != job_id]
    log = (sweep_dir / ".submitit" / new_id / f"{new_id}_0_log.out").read_text()
    assert f"epoch {(saved[1] - 1) // steps_per_epoch + 1}, step {saved[1]} of {epochs * steps_per_epoch}" in log
    assert [m["epoch"] for m in _epochs(run_dir)] == list(range(1, epochs + 1))
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["wandb_id"] == wandb_id
    run = read_wandb_run(run_dir)
    assert run["run_id"] == wandb_id and len(run["segments"]) == 3 and run["exit_code"] == 0
