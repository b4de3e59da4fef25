"""The sweep manifest: what `meal.sweep_manifest.SweepManifest` writes when a multirun starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from meal.config import register
from meal.sweep_manifest import SweepManifest, git_revision, sweep_wandb_group, write_manifest
from meal.tracking.naming import run_group

REPO = Path(__file__).resolve().parents[2]
TASK_OVERRIDES = ["method=ce", "seed=0,1", "experiment=manifest_test"]


@pytest.fixture(autouse=True)
def _clear_hydra() -> Iterator[None]:
    yield
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


@contextmanager
def config_loader() -> Iterator[ConfigLoader]:
    """Hydra's config loader over conf/, as `launch.py` sets it up."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        yield GlobalHydra.instance().config_loader()


def _load_master(loader: ConfigLoader, overrides: Sequence[str]) -> DictConfig:
    return loader.load_configuration(
        config_name="config", run_mode=RunMode.MULTIRUN, overrides=["hydra.mode=MULTIRUN", *overrides]
    )


def compose_multirun(overrides: Sequence[str]) -> DictConfig:
    """The driver's config of `launch.py -m OVERRIDES`: what Hydra hands to on_multirun_start."""
    with config_loader() as loader:
        return _load_master(loader, overrides)


def compose_sweep_job(
    overrides: Sequence[str], job_overrides: Sequence[str], job_num: int
) -> tuple[DictConfig, DictConfig]:
    """The driver's config and the config the launcher builds from it for job `job_num`."""
    with config_loader() as loader:
        master = _load_master(loader, overrides)
        sweep_dir = str(master.hydra.sweep.dir)  # resolved in the driver first, as the callback does
        job = loader.load_sweep_config(master, list(job_overrides))
    with open_dict(job):
        job.hydra.job.num = job_num
    assert str(job.hydra.sweep.dir) == sweep_dir
    return master, job


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def git_repo(tmp_path: Path) -> tuple[Path, str]:
    """A git repository with one commit; returns its path and HEAD."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("x = 1\n")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "first")
    return repo, _git(repo, "rev-parse", "HEAD")


def test_manifest_records_the_sweep(
    tmp_path: Path, git_repo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, head = git_repo
    sweep = tmp_path / "sweeps" / "2024-01-02_03-04-05"
    cfg = compose_multirun([*TASK_OVERRIDES, "hydra/launcher=local", f"hydra.sweep.dir={sweep}"])
    monkeypatch.setenv("MEAL_ROOT", str(repo))
    monkeypatch.setattr(sys, "argv", ["launch.py", "-m", "seed=0,1"])

    SweepManifest().on_multirun_start(config=cfg, config_name="config")

    manifest = json.loads((sweep / "manifest.json").read_text())
    started_at = datetime.fromisoformat(manifest.pop("started_at"))
    assert started_at.tzinfo is not None
    assert manifest == {
        "experiment": "manifest_test",
        "overrides": TASK_OVERRIDES,
        "sweeper_params": None,
        "launcher": "local",
        "sweep_dir": str(sweep),
        "wandb_group": "manifest_test/2024-01-02_03-04-05",
        "git_revision": {"commit": head, "dirty": False},
        "command": ["launch.py", "-m", "seed=0,1"],
    }


def test_manifest_sweeper_params_and_logger_group(tmp_path: Path) -> None:
    cfg = compose_multirun(["logger.group=ablation-7", f"hydra.sweep.dir={tmp_path}"])
    cfg.hydra.sweeper.params = {"seed": "0,1,2"}  # as an experiment file's `hydra.sweeper.params` sets it

    SweepManifest().on_multirun_start(config=cfg)

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["sweeper_params"] == {"seed": "0,1,2"}
    assert manifest["wandb_group"] == "ablation-7"
    assert manifest["launcher"] == "basic"


def test_rerun_into_same_dir_keeps_first_manifest(tmp_path: Path) -> None:
    cfg = compose_multirun([*TASK_OVERRIDES, f"hydra.sweep.dir={tmp_path}"])
    SweepManifest().on_multirun_start(config=cfg)
    first = (tmp_path / "manifest.json").read_text()

    SweepManifest().on_multirun_start(config=cfg)
    SweepManifest().on_multirun_start(config=cfg)

    assert (tmp_path / "manifest.json").read_text() == first
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["manifest-1.json", "manifest-2.json", "manifest.json"]
    assert json.loads((tmp_path / "manifest-2.json").read_text())["overrides"] == TASK_OVERRIDES


def test_write_manifest_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError("no hard links on this file system")

    monkeypatch.setattr(os, "link", no_links)

    assert write_manifest(tmp_path, {"n": 0}) == tmp_path / "manifest.json"
    assert write_manifest(tmp_path, {"n": 1}) == tmp_path / "manifest-1.json"
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"n": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest-1.json", "manifest.json"]


def test_git_revision_dirty_only_for_changed_tracked_files(git_repo: tuple[Path, str]) -> None:
    repo, head = git_repo
    (repo / "notes.txt").write_text("untracked\n")
    assert git_revision(repo / ".") == {"commit": head, "dirty": False}

    (repo / "train.py").write_text("x = 2\n")
    assert git_revision(repo) == {"commit": head, "dirty": True}


def test_git_revision_is_none_without_repository_or_git(
    tmp_path: Path, git_repo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert git_revision(plain) is None
    assert git_revision(tmp_path / "missing") is None

    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    assert git_revision(empty) is None

    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert git_revision(git_repo[0]) is None


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["logger.group=my-group"], ["experiment=other"]])
def test_wandb_group_is_the_group_of_the_sweep_jobs(extra: list[str]) -> None:
    """The manifest's group equals the one meal.tracking.naming gives each job (default sweep dir)."""
    overrides = ["method=ce", "seed=0,1", *extra]
    job_overrides = [*(o for o in overrides if o != "seed=0,1"), "seed=1"]
    master, job = compose_sweep_job(overrides, job_overrides, job_num=1)
    HydraConfig.instance().set_config(job)
    with open_dict(job):
        job_dir = Path(str(job.hydra.sweep.dir)) / str(job.hydra.sweep.subdir)
        del job["hydra"]

    assert run_group(job, job_dir) == sweep_wandb_group(master)
    assert OmegaConf.select(job, "seed") == 1


@pytest.mark.slow
def test_multirun_writes_manifest_end_to_end(tmp_path: Path, meal_env: dict[str, str]) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "method=ce",
        "trainer.epochs=1",
        "data=synthetic",
        "data.train_size=64",
        "data.test_size=32",
        "student=fmnist_tiny",
        "data.in_channels=1",
        "data.image_size=28",
        "data.mean=[0.5]",
        "data.std=[0.5]",
        "teachers=none",
        "logger=none",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    ]

    out = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args],
        env=meal_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    manifest = json.loads((sweep / "manifest.json").read_text())
    assert "seed=0,1" in manifest["overrides"]
    assert manifest["launcher"] == "basic"
    assert manifest["wandb_group"] == f"{manifest['experiment']}/sweep"
    assert manifest["command"][1:] == args
    assert (sweep / "0").is_dir()
    assert (sweep / "1").is_dir()
    assert not (sweep / "manifest-1.json").exists()
