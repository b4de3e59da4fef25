"""Kill-and-resume soak: a run SIGKILLed again and again ends exactly where an uninterrupted run ends.

A small MEAL v1 run on Fashion-MNIST (two tiny teachers from a zoo in tmp_path, a checkpoint after
every step) is started with launch.py, killed with SIGKILL at moments drawn from a seeded generator,
some of them while a checkpoint is being written, and started again with the same arguments in the
same run directory until it completes. After every kill the checkpoints on disk must load; at the
end result.json (wall-clock fields aside), metrics.jsonl and the student weights in last.pt and
best.pt must equal those of the uninterrupted run, bit for bit.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from meal.engine.checkpoint import load_checkpoint
from meal.models import build_model
from tests.conftest import REPO, needs_fashion_mnist, run_launch

KILLS = 6  # at least this many SIGKILLs of a running process
KILLS_MID_WRITE = 2  # of which at least this many leave a checkpoint's temporary file behind
MAX_STARTS = 16
MODES = ("mid-write", "random", "mid-write", "startup", "random", "mid-write")
WALL_CLOCK_FIELDS = ("wall_s", "train_s", "img_per_s", "wandb_id")
START_TIMEOUT_S = 180
SEED = 20190127


@dataclass
class Kill:
    """One SIGKILL: how its moment was chosen, the step on disk afterwards, the temporary files it cut short."""

    mode: str
    step: int | None
    temporaries: list[str]


def _args(zoo: Path, run_dir: Path) -> list[str]:
    members = ",".join(f"{{arch:fmnist_tiny,checkpoint:{zoo / name}.pt}}" for name in ("teacher_a", "teacher_b"))
    return [
        "data=fashion_mnist",
        "data.train_subset=768",
        "data.test_subset=256",
        "data.batch_size=32",
        "data.eval_batch_size=256",
        "data.augment=pad_crop_flip",
        "student=fmnist_tiny",
        "method=meal_v1",
        "teachers=none",
        f"teachers.members=[{members}]",
        "optim.lr=0.05",
        "trainer.epochs=3",
        "trainer.ckpt_every_steps=1",
        "trainer.deterministic=true",
        "trainer.threads=1",
        "trainer.progress=off",
        "logger=none",
        f"hydra.run.dir={run_dir}",
    ]


def _make_zoo(zoo: Path) -> None:
    zoo.mkdir()
    for seed, name in enumerate(("teacher_a", "teacher_b")):
        torch.manual_seed(seed)
        torch.save(build_model("fmnist_tiny", 10, 1, 28).state_dict(), zoo / f"{name}.pt")


def _stamp(path: Path) -> tuple[int, int] | None:
    """Changes whenever the file is written again (None while it does not exist)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _temporaries(ckpt_dir: Path) -> list[str]:
    return sorted(p.name for p in ckpt_dir.glob(".*.tmp")) if ckpt_dir.is_dir() else []


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float, interval: float) -> bool:
    """Poll `condition` until it holds (True) or the process ends or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(interval)
    return False


def _wait_for_writes(
    path: Path, count: int, proc: subprocess.Popen, timeout: float = START_TIMEOUT_S
) -> tuple[float, float]:
    """Wait until `path` has been written `count` more times (or `timeout` seconds have passed).

    Returns the seconds until the first of these writes and between the last two.
    """
    seen, previous, times = 0, _stamp(path), [time.monotonic()]
    deadline = times[0] + timeout
    while seen < count and proc.poll() is None and time.monotonic() < deadline:
        stamp = _stamp(path)
        if stamp is not None and stamp != previous:
            seen, previous = seen + 1, stamp
            times.append(time.monotonic())
        time.sleep(0.001)
    first = times[1] - times[0] if len(times) > 1 else 5.0
    return first, times[-1] - times[-2] if len(times) > 2 else 0.1


def _result(run_dir: Path) -> dict[str, Any]:
    result = json.loads((run_dir / "result.json").read_text())
    return {k: v for k, v in result.items() if k not in WALL_CLOCK_FIELDS}


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "img_per_s"} for row in rows]


def _student(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["student"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _student(a), _student(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{a.name}: weights differ from the uninterrupted run in {differ[:5]}"


def _check_checkpoints(ckpt_dir: Path) -> int | None:
    """Every checkpoint on disk loads whole; returns last.pt's global step (None before the first)."""
    step = None
    for name in ("last.pt", "best.pt"):
        if (ckpt_dir / name).exists():
            state = load_checkpoint(ckpt_dir / name)  # raises on a truncated or corrupt file
            if name == "last.pt":
                step = int(state["global_step"])
    return step


@pytest.mark.slow
@needs_fashion_mnist
def test_killed_and_restarted_run_equals_uninterrupted_run(tmp_path: Path, meal_env: dict[str, str]) -> None:
    env = meal_env | {"OMP_NUM_THREADS": "1"}
    zoo = tmp_path / "zoo"
    _make_zoo(zoo)
    reference = tmp_path / "reference"
    done = run_launch(_args(zoo, reference), env, timeout=START_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    run_dir = tmp_path / "killed"
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    rng = random.Random(SEED)
    kills: list[Kill] = []
    completed = False
    start_s = 5.0  # seconds from launch to the first step, measured on the first start
    for start in range(MAX_STARTS):
        mode = MODES[len(kills) % len(MODES)] if len(kills) < KILLS or _mid_write(kills) < KILLS_MID_WRITE else "none"
        stale = set(_temporaries(ckpt_dir))
        with open(tmp_path / f"start{start}.log", "w") as log:
            proc = subprocess.Popen(
                [sys.executable, str(REPO / "launch.py"), *_args(zoo, run_dir)],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            if mode == "startup":  # anywhere: imports, data, teachers, at the latest after three steps
                _wait_for_writes(last, 3, proc, timeout=rng.uniform(0.2, 1.2) * start_s)
            elif mode in ("random", "mid-write"):  # after a few steps of this start (one checkpoint each)
                first_s, step_s = _wait_for_writes(last, rng.randint(2, 8), proc)
                start_s = first_s if start == 0 else start_s
                if mode == "random":
                    _wait_for(lambda: False, proc, rng.uniform(0.0, step_s), 0.001)
                else:  # the next checkpoint's temporary file, which exists only while it is written (busy poll)
                    _wait_for(lambda: bool(_temporaries(ckpt_dir)), proc, 3 * step_s, 0.0)
            if mode != "none" and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            code = proc.wait(timeout=START_TIMEOUT_S)
        output = (tmp_path / f"start{start}.log").read_text()
        if code == -signal.SIGKILL:
            left = [name for name in _temporaries(ckpt_dir) if name not in stale]
            kills.append(Kill(mode, _check_checkpoints(ckpt_dir), left))
            continue
        assert code == 0, f"start {start} failed with {code}:\n{output[-4000:]}"
        completed = True
        break

    summary = "\n".join(f"  {k.mode:9} -> step {k.step}, left {k.temporaries}" for k in kills)
    print(f"{len(kills)} kills, then a start that completed:\n{summary}")
    assert completed, f"the run did not complete in {MAX_STARTS} starts:\n{summary}"
    assert len(kills) >= KILLS, f"only {len(kills)} kills:\n{summary}"
    assert _mid_write(kills) >= KILLS_MID_WRITE, f"too few kills during a checkpoint write:\n{summary}"
    assert not _temporaries(ckpt_dir), "temporary files of cut-short writes are removed on restart"
    hydra = run_dir / ".hydra"
    assert (hydra / "accepted" / "overrides.yaml").read_bytes() == (hydra / "overrides.yaml").read_bytes()

    assert _result(run_dir) == _result(reference)
    assert _metrics(run_dir) == _metrics(reference)
    _assert_same_weights(run_dir / "checkpoints" / "last.pt", reference / "checkpoints" / "last.pt")
    _assert_same_weights(run_dir / "checkpoints" / "best.pt", reference / "checkpoints" / "best.pt")


def _mid_write(kills: list[Kill]) -> int:
    return sum(1 for k in kills if k.temporaries)
