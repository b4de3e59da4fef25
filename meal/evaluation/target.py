"""What `python -m meal.evaluate` and `python -m meal.export` are pointed at: a run directory, a checkpoint
file, or a zoo entry (or an exported ``student.pt``), resolved to a student's weights and the config it
was trained with.

A run directory holds ``resolved_config.yaml`` and ``checkpoints/{last,best}.pt``; a training checkpoint
named directly finds its config two folders up. A plain state-dict file (a zoo entry, an exported
student) is described by its JSON sidecar, whose sha256 must match the file and whose ``config`` is the
resolved config of the run that wrote it. A zoo entry may also be named as ``<dataset>/<arch>-s<seed>``
(with or without ``.pt``), looked up in ``$MEAL_ZOO`` and in ``zoo/`` beside launch.py.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from meal.core.result import RESULT_FILE, Result
from meal.engine.checkpoint import file_sha256, load_checkpoint
from meal.engine.trainer import CHECKPOINT_FORMAT
from meal.errors import CheckpointError, MealError, ResultError
from meal.rundir import RESOLVED_CONFIG

log = logging.getLogger(__name__)

#: the keys of a zoo entry's sidecar that are figures of the run that trained it
SIDECAR_FIGURES = ("top1", "top5", "epochs")


@dataclass
class Target:
    """A student's weights (torchvision-format state dict) and the resolved config of the run that trained them."""

    name: str
    kind: str  # "run", "checkpoint" or "zoo" (a state-dict file with a sidecar)
    weights_file: Path
    state_dict: dict[str, Any]
    cfg: DictConfig
    run_dir: Path | None
    #: the figures of the run that trained the student: a run directory's result.json, or a zoo entry's
    #: sidecar's (``top1``, ``top5``, ``epochs``); None when there are none or they cannot be read
    result: Result | None

    @property
    def arch(self) -> str:
        """The student's architecture name."""
        return str(self.cfg.student.arch)


def _zoo_candidates(name: str) -> list[Path]:
    stem = name[:-3] if name.endswith(".pt") else name
    roots = [Path(os.environ["MEAL_ZOO"])] if os.environ.get("MEAL_ZOO") else []
    roots.append(_meal_root() / "zoo")
    return [root / f"{stem}.pt" for root in roots]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _read_result(run_dir: Path) -> Result | None:
    """The run's result.json; None (a warning for a malformed one) when it cannot be read."""
    try:
        return Result.read(run_dir / RESULT_FILE)
    except FileNotFoundError:
        return None
    except (OSError, ResultError) as exc:
        log.warning("%s; its figures are left out", exc)
        return None


def _sidecar_result(info: dict[str, Any], sidecar: Path) -> Result | None:
    """The figures a zoo entry's sidecar records, as a Result; None when it records none."""
    figures = {key: info[key] for key in SIDECAR_FIGURES if key in info}
    if not figures:
        return None
    try:
        return Result.from_dict(figures, sidecar)
    except ResultError as exc:
        log.warning("%s; its figures are left out", exc)
        return None


def _from_run_dir(run_dir: Path, which: str, name: str) -> Target:
    config = run_dir / RESOLVED_CONFIG
    if not config.is_file():
        raise MealError(
            f"{run_dir}: not a run directory (no {RESOLVED_CONFIG}); name a run directory, a "
            "checkpoint file or a zoo entry"
        )
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        fix = "use --checkpoint last" if which == "best" else "the run has not saved a checkpoint yet"
        raise CheckpointError(f"{path}: checkpoint not found ({fix})")
    return _from_training_checkpoint(path, run_dir, name, "run")


def _meal_root() -> Path:
    return Path(os.environ.get("MEAL_ROOT", Path(__file__).resolve().parents[2]))


def run_config(run_dir: Path) -> DictConfig:
    """The run's resolved config, completed with the keys resolved_config.yaml leaves out (where the data,
    the zoo and caches live, how data is read): the run's own overrides of them (``.hydra/overrides.yaml``),
    else ``$MEAL_DATA`` / ``$MEAL_ZOO`` / ``$MEAL_CACHE``, else the folders beside launch.py."""
    from meal.config.schema import DataConfig

    saved = OmegaConf.load(run_dir / RESOLVED_CONFIG)
    assert isinstance(saved, DictConfig)
    root = _meal_root()
    paths = {
        "root_dir": str(root),
        "output_dir": str(run_dir),
        "data_dir": os.environ.get("MEAL_DATA") or str(root / "data"),
        "zoo": os.environ.get("MEAL_ZOO") or str(root / "zoo"),
        "cache_dir": os.environ.get("MEAL_CACHE") or str(root / "cache"),
    }
    data_defaults = OmegaConf.to_container(
        OmegaConf.structured(DataConfig(name=str(saved.data.name))), enum_to_str=True
    )
    cfg = OmegaConf.merge({"paths": paths, "data": data_defaults}, saved)
    overrides = (
        OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
        if (run_dir / ".hydra" / "overrides.yaml").is_file()
        else []
    )
    kept = [
        str(o).lstrip("+")
        for o in overrides
        if str(o).lstrip("+").startswith(("paths.", "data.root=", "data.download="))
    ]
    if kept:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(kept))
    assert isinstance(cfg, DictConfig)
    return cfg


def _from_training_checkpoint(path: Path, run_dir: Path, name: str, kind: str) -> Target:
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT or "student" not in ckpt:
        raise CheckpointError(f"{path}: not a meal training checkpoint (format {ckpt.get('format')!r})")
    config = run_dir / RESOLVED_CONFIG
    if not config.is_file():
        raise MealError(f"{path}: its run directory {run_dir} has no {RESOLVED_CONFIG} to say what the student is")
    return Target(name, kind, path, ckpt["student"], run_config(run_dir), run_dir, _read_result(run_dir))


def _from_state_dict_file(path: Path, name: str) -> Target:
    sidecar = path.with_suffix(".json")
    info = _read_json(sidecar)
    if info is None:
        raise CheckpointError(
            f"{path}: no readable sidecar {sidecar.name} says which model this is (evaluate "
            "a run directory, or a zoo entry or exported student with its .json sidecar)"
        )
    recorded = info.get("sha256")
    if recorded is not None and recorded != file_sha256(path):
        raise CheckpointError(
            f"{path}: does not match the sha256 in its sidecar {sidecar.name}: it changed after "
            "it was written (export or train it again)"
        )
    if not isinstance(info.get("config"), dict):
        raise CheckpointError(f"{sidecar}: records no config of the run that wrote {path.name}")
    state = load_checkpoint(path)
    if "format" in state:  # a training checkpoint with a sidecar next to it is still a training checkpoint
        state = state.get("student", {})
    cfg = OmegaConf.create(info["config"])
    return Target(name, "zoo", path, state, cfg, None, _sidecar_result(info, sidecar))


def resolve_target(target: str, which: str = "last") -> Target:
    """The student named by `target` (run directory, checkpoint file, zoo entry) and its training config.

    `which` chooses ``checkpoints/last.pt`` (the final weights) or ``best.pt`` of a run directory.
    """
    path = Path(target).expanduser()
    if path.is_dir():
        return _from_run_dir(path, which, target)
    if not path.is_file():
        found = next((p for p in _zoo_candidates(target) if p.is_file()), None)
        if found is None:
            places = ", ".join(str(p) for p in _zoo_candidates(target))
            raise MealError(
                f"{target}: no such run directory, checkpoint file or zoo entry (looked at {target}, {places})"
            )
        path = found
    if path.with_suffix(".json").is_file():
        return _from_state_dict_file(path, target)
    return _from_training_checkpoint(path, path.parent.parent, target, "checkpoint")
