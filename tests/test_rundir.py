"""The run directory: nothing is recorded before every check passed, one run at a time, restarts compared first."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from meal.app import train
from meal.config.schema import Precision
from meal.errors import CheckpointError, DataError, MealError
from meal.models import build_model
from meal.rundir import RESOLVED_CONFIG, check_config, comparable_config, write_config
from meal.runlock import LOCK_FILE
from tests.conftest import compose_config, needs_fashion_mnist
from tests.test_runlock import hold_in_subprocess

# every test starts real runs in-process (and some a lock holder in a subprocess)
pytestmark = pytest.mark.slow

TINY = [
    "data=synthetic",
    "data.train_size=64",
    "data.test_size=32",
    "data.batch_size=32",
    "data.eval_batch_size=32",
    "logger=none",
    "method=ce",
    "teachers=none",
    "trainer.epochs=1",
    "trainer.progress=off",
    "trainer.threads=1",
]


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def _teacher(path: Path) -> str:
    torch.save(build_model("fmnist_cnn", 10, 3, 32).state_dict(), path)
    return f"teachers.members=[{{arch:fmnist_cnn,checkpoint:{path}}}]"


def test_a_start_refused_for_a_mistyped_teacher_records_nothing_and_the_fixed_command_runs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    good = _teacher(tmp_path / "teacher.pt")
    typo = good.replace("teacher.pt", "teachr.pt")
    with pytest.raises(CheckpointError, match=r"^teachers\.members\[0\]\.checkpoint: teacher file \S+teachr\.pt"):
        train(compose_config([*TINY, "method=kd", typo], run), run)
    assert _files(run) == [LOCK_FILE], "no resolved_config.yaml, checkpoint or metrics"

    result = train(compose_config([*TINY, "method=kd", good], run), run)
    assert result.status == "completed" and result.teachers == ["teacher"]
    saved = OmegaConf.load(run / RESOLVED_CONFIG)
    assert saved.teachers.members[0].checkpoint == str(tmp_path / "teacher.pt")


@needs_fashion_mnist
def test_a_start_refused_for_a_mistyped_data_root_records_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fashion = [
        *(o for o in TINY if not o.startswith("data.")),
        "data=fashion_mnist",
        "data.train_subset=64",
        "data.test_subset=32",
        "data.batch_size=32",
    ]
    with pytest.raises(DataError, match=r"^data\.root: Fashion-MNIST not found in \S+/fashoin \("):
        train(compose_config([*fashion, f"data.root={tmp_path / 'fashoin'}"], run), run)
    assert _files(run) == [LOCK_FILE]
    assert train(compose_config(fashion, run), run).status == "completed"


def test_a_second_start_is_refused_while_the_first_holds_the_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = hold_in_subprocess(run)
    try:
        with pytest.raises(MealError, match=rf"^{run}: another run is using this directory \(pid {holder.pid} on "):
            train(compose_config(TINY, run), run)
        assert _files(run) == [LOCK_FILE]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    result = train(compose_config(TINY, run), run)  # the killed holder left the file, not the lock
    assert result.status == "completed" and (run / RESOLVED_CONFIG).is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(row["epoch"], row["step"]) for row in rows] == [(1, 2)], "one run wrote its epoch, once"


def test_a_restart_with_another_config_is_refused_before_any_work_and_the_original_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = train(compose_config([*TINY, "trainer.epochs=2", "trainer.max_steps=2"], run), run)
    assert first.status == "stopped" and first.steps == 2
    before = {name: (run / name).read_bytes() for name in _files(run) if name != LOCK_FILE}
    with pytest.raises(MealError, match=r"different config: optim\.lr \(was 0\.1, now 0\.2\)"):
        train(compose_config([*TINY, "trainer.epochs=2", "optim.lr=0.2"], run), run)
    assert {name: (run / name).read_bytes() for name in before} == before
    resumed = train(compose_config([*TINY, "trainer.epochs=2"], run), run)
    assert resumed.status == "completed" and resumed.steps == 4 and resumed.epochs == 2


def test_a_run_saved_before_a_key_existed_resumes_when_the_key_holds_its_default(tmp_path: Path) -> None:
    """A sweep started with an older meal: its resolved_config.yaml lacks a key added since (here
    trainer.objective). At the schema's default the restart is accepted; at another value it is refused."""
    run = tmp_path / "run"
    first = train(compose_config([*TINY, "trainer.epochs=2", "trainer.max_steps=2"], run), run)
    assert first.status == "stopped" and first.steps == 2
    saved = OmegaConf.load(run / RESOLVED_CONFIG)
    assert saved.trainer.objective == "auto"
    del saved.trainer["objective"]
    (run / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(saved))
    before = {name: (run / name).read_bytes() for name in _files(run) if name != LOCK_FILE}
    with pytest.raises(MealError, match=r"different config: trainer\.objective \(was None, now 'test'\)"):
        train(compose_config([*TINY, "trainer.epochs=2", "trainer.objective=test"], run), run)
    assert {name: (run / name).read_bytes() for name in before} == before
    resumed = train(compose_config([*TINY, "trainer.epochs=2"], run), run)
    assert resumed.status == "completed" and resumed.steps == 4


def test_a_run_directory_saved_before_the_choice_keys_were_typed_restarts_and_compares_by_value(tmp_path: Path) -> None:
    """Choice keys hold Enum members in a composed config; resolved_config.yaml holds their plain values, as
    every run directory written before the keys were typed does. Such a directory restarts, and a changed
    choice is refused showing the values."""
    run = tmp_path / "run"
    cfg = compose_config([*TINY, "trainer.precision=fp32"], run)
    assert isinstance(cfg.trainer.precision, Precision) and isinstance(cfg.method.name, str)
    plain = comparable_config(cfg)
    assert type(plain["trainer"]["precision"]) is str and type(plain["schedule"]["name"]) is str
    run.mkdir()
    (run / RESOLVED_CONFIG).write_text(yaml.safe_dump(plain))  # safe_dump refuses any object but plain data
    assert check_config(compose_config([*TINY, "trainer.precision=fp32"], run), run) is True
    with pytest.raises(MealError, match=r"different config: trainer\.precision \(was 'fp32', now 'bf16'\);"):
        check_config(compose_config([*TINY, "trainer.precision=bf16"], run), run)
    written = tmp_path / "written"
    write_config(cfg, written)
    assert "precision: fp32\n" in (written / RESOLVED_CONFIG).read_text()
    assert yaml.safe_load((written / RESOLVED_CONFIG).read_text()) == plain


def test_a_teacher_run_waits_for_the_directory_instead_of_being_refused(tmp_path: Path) -> None:
    """Two jobs of a sweep that both miss one zoo teacher: the second waits, then finds the first one's run."""
    run = tmp_path / "zoo" / "runs" / "fmnist_tiny-s0"
    holder = hold_in_subprocess(run)
    killer = threading.Timer(1.5, holder.send_signal, (signal.SIGKILL,))
    killer.start()
    started = time.monotonic()
    result = train(compose_config(TINY, run), run, job_type="teacher", wait_for_dir=True)
    holder.wait(timeout=30)
    assert time.monotonic() - started >= 1.5, "it waited for the holder"
    assert result.status == "completed" and (run / RESOLVED_CONFIG).is_file()


def test_a_finished_run_started_again_keeps_its_recorded_wall_time_and_figures(tmp_path: Path) -> None:
    """Re-running a completed sweep starts each finished job again; it trains nothing and must not replace the
    run's wall time with that start's few seconds, nor drop a figure an older checkpoint does not hold."""
    run = tmp_path / "run"
    first = train(compose_config(TINY, run), run)
    assert first.status == "completed"
    recorded = json.loads((run / "result.json").read_text())
    recorded |= {"wall_s": 1234.5, "best_epoch": 1}
    (run / "result.json").write_text(json.dumps(recorded))
    ckpt_path = run / "checkpoints" / "last.pt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt.pop("best_epoch", None)  # as written by an older meal
    torch.save(ckpt, ckpt_path)
    again = train(compose_config(TINY, run), run)
    saved = json.loads((run / "result.json").read_text())
    assert again.steps == first.steps and again.top1 == first.top1
    assert saved["wall_s"] == 1234.5 and saved["best_epoch"] == 1
