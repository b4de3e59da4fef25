"""Teacher files are used only when they match their sidecars (zoo entries always, explicit files if they have one)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

from meal.engine.checkpoint import file_sha256
from meal.errors import CheckpointError
from meal.models import build_model
from meal.teachers import export_to_zoo, load_teachers, zoo_entry
from tests.conftest import compose_config

DATA = SimpleNamespace(num_classes=10, in_channels=3, image_size=32)
CPU = torch.device("cpu")


def _cfg(tmp_path: Path, *members: str) -> DictConfig:
    return compose_config(
        ["data=synthetic", "method=kd", "teachers=fmnist_single", f"paths.zoo={tmp_path / 'zoo'}", *members],
        tmp_path / "run",
    )


def _recipe_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of a teacher run's config that records the teacher set's training recipe."""
    t = cfg.teachers.training
    return {
        "trainer": {"epochs": t.epochs},
        "optim": {"name": t.optim, "lr": t.lr},
        "schedule": {"name": t.schedule},
        "data": {"train_subset": t.train_subset},
    }


def _export(cfg: DictConfig) -> Path:
    """Export a fmnist_cnn for the set's first member into the zoo, as a teacher run does."""
    member = cfg.teachers.members[0]
    path = zoo_entry(Path(cfg.paths.zoo), cfg.data.name, member.arch, member.seed)
    model = build_model(member.arch, DATA.num_classes, DATA.in_channels, DATA.image_size)
    return export_to_zoo(
        model,
        path,
        {
            "arch": member.arch,
            "dataset": cfg.data.name,
            "classes": 10,
            "in_channels": 3,
            "image_size": 32,
            "seed": member.seed,
            "config": _recipe_config(cfg),
        },
    )


def _flip_byte(path: Path, offset: int = -100) -> None:
    """Damage a file without changing its size."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_zoo_teacher_matching_its_sidecar_is_loaded(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    path = _export(cfg)
    (teacher,) = load_teachers(cfg, DATA, CPU)
    assert teacher.checkpoint == str(path)
    assert teacher.sha256 == file_sha256(path) == json.loads(path.with_suffix(".json").read_text())["sha256"]


def test_a_zoo_teacher_changed_after_export_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    path = _export(cfg)
    recorded = json.loads(path.with_suffix(".json").read_text())["sha256"]
    size = path.stat().st_size
    _flip_byte(path)
    assert path.stat().st_size == size
    with pytest.raises(CheckpointError) as info:
        load_teachers(cfg, DATA, CPU)
    assert str(info.value) == (
        f"teachers.members[0]: teacher {path} does not match the sha256 in its sidecar {path.stem}.json (file "
        f"{file_sha256(path)[:12]}..., sidecar {recorded[:12]}...): it changed after it was written (delete {path} "
        f"and {path.stem}.json, then train it again with teachers.train_missing=true)"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sidecar", "problem"),
    [
        (None, "has no sidecar"),
        ("{not json", "cannot be read (Expecting property name"),
        ('["a list"]', "records no sha256"),
        ('{"arch": "fmnist_cnn"}', "records no sha256"),
    ],
)
def test_a_zoo_teacher_without_a_usable_sidecar_is_refused(tmp_path: Path, sidecar: str | None, problem: str) -> None:
    cfg = _cfg(tmp_path)
    path = _export(cfg)
    if sidecar is None:
        path.with_suffix(".json").unlink()
    else:
        path.with_suffix(".json").write_text(sidecar)
    with pytest.raises(CheckpointError) as info:
        load_teachers(cfg, DATA, CPU)
    message = str(info.value)
    assert message.startswith("teachers.members[0]: ")
    assert problem in message and str(path) in message
    assert f"delete {path} and {path.stem}.json, then train it again" in message


def test_an_explicit_checkpoint_without_a_sidecar_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "mine.pt"
    torch.save(build_model("fmnist_cnn", 10, 3, 32).state_dict(), path)
    (teacher,) = load_teachers(_cfg(tmp_path, f"teachers.members=[{{arch:fmnist_cnn,checkpoint:{path}}}]"), DATA, CPU)
    assert (teacher.name, teacher.sha256) == ("mine", file_sha256(path))


@pytest.mark.slow
def test_an_explicit_checkpoint_is_checked_against_the_sidecar_it_has(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    zoo_file = _export(cfg)
    path = tmp_path / "copied.pt"
    path.write_bytes(zoo_file.read_bytes())
    path.with_suffix(".json").write_text(zoo_file.with_suffix(".json").read_text())
    explicit = _cfg(tmp_path, f"teachers.members=[{{arch:fmnist_cnn,checkpoint:{path}}}]")
    assert load_teachers(explicit, DATA, CPU)[0].sha256 == file_sha256(zoo_file)
    _flip_byte(path)
    with pytest.raises(
        CheckpointError,
        match=rf"^teachers\.members\[0\]: teacher {path} does not match the sha256 "
        rf"in its sidecar copied\.json .*\(restore the file, or delete "
        rf"{path.with_suffix('.json')} if the file was replaced on purpose\)$",
    ):
        load_teachers(explicit, DATA, CPU)
