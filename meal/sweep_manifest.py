"""A sweep's provenance: `<hydra.sweep.dir>/manifest.json`, written when a multirun starts.

Registered as a Hydra callback in conf/config.yaml (`hydra.callbacks.sweep_manifest`). The manifest
records what was asked for (command line, overrides, sweeper parameters), where it ran (launcher),
from which code (git commit and whether tracked files had changed) and the W&B group its runs share.
A sweep started again into the same directory keeps the first manifest and writes
`manifest-1.json`, `manifest-2.json`, ... next to it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from meal.tracking.naming import group_name

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
GIT_TIMEOUT_S = 30


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=GIT_TIMEOUT_S
    ).stdout.strip()


def git_revision(repo: Path) -> dict[str, Any] | None:
    """HEAD of the git work tree that holds `repo`: ``{"commit": sha, "dirty": bool}``, where dirty
    means tracked files differ from HEAD. None when there is no git, no repository or no commit."""
    try:
        commit = _git(repo, "rev-parse", "--verify", "HEAD")
        changes = _git(repo, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("No git revision for %s: %s", repo, err)
        return None
    return {"commit": commit, "dirty": bool(changes)}


def code_root() -> Path:
    """Where the code of this sweep lives: `MEAL_ROOT` if set, else the working directory."""
    return Path(os.environ.get("MEAL_ROOT") or os.getcwd())


def sweep_wandb_group(config: DictConfig) -> str:
    """The W&B group of the sweep's runs, as meal.tracking.naming.run_group gives it in a sweep job:
    `logger.group` if set, else ``<experiment>/<name of hydra.sweep.dir>``."""
    return group_name(OmegaConf.select(config, "logger.group"), config.experiment, config.hydra.sweep.dir)


def build_manifest(config: DictConfig) -> dict[str, Any]:
    """The manifest of the multirun described by `config` (the driver's config, with its `hydra` node)."""
    hydra_cfg = config.hydra
    params = OmegaConf.select(hydra_cfg, "sweeper.params")
    choices = OmegaConf.select(hydra_cfg, "runtime.choices") or {}
    return {
        "experiment": OmegaConf.select(config, "experiment"),
        "overrides": OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False),
        "sweeper_params": OmegaConf.to_container(params, resolve=False) if params is not None else None,
        "launcher": choices.get("hydra/launcher"),
        "sweep_dir": str(Path(str(hydra_cfg.sweep.dir)).absolute()),
        "wandb_group": sweep_wandb_group(config),
        "git_revision": git_revision(code_root()),
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": list(sys.argv),
    }


def _claim(tmp: Path, target: Path) -> bool:
    """Give the finished file `tmp` the name `target` unless that name is taken (atomically where the
    file system has hard links)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError:
        if target.exists():
            return False
        os.replace(tmp, target)
        return True
    tmp.unlink()
    return True


def write_manifest(sweep_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write `manifest` as `sweep_dir/manifest.json`, or as the first free `manifest-<n>.json` when
    that exists; the file appears complete or not at all. Returns its path."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    tmp = sweep_dir / f".manifest-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with tmp.open("x", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        n = 0
        while True:
            target = sweep_dir / (MANIFEST if n == 0 else f"manifest-{n}.json")
            if _claim(tmp, target):
                return target
            n += 1
    finally:
        tmp.unlink(missing_ok=True)


class SweepManifest(Callback):
    """Hydra callback: writes the sweep's manifest into `hydra.sweep.dir` before any job starts."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Write `<hydra.sweep.dir>/manifest.json` (or `manifest-<n>.json` if one exists)."""
        path = write_manifest(Path(str(config.hydra.sweep.dir)), build_manifest(config))
        log.info("Sweep manifest: %s", path)
