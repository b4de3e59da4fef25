"""Teacher sets (`teachers=` group) and the teacher zoo.

A member is an architecture plus a checkpoint: a file path, or the zoo entry
``<zoo>/<dataset>/<arch>-s<seed>.pt`` (with a ``.json`` sidecar: arch, dataset, classes, input shape,
top1, config, sha256). Teachers are frozen, in eval mode, and checked against the data's class count
and input shape before any training starts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from meal.core.teacher import Teacher
from meal.engine.checkpoint import atomic_write_bytes, atomic_write_json, file_sha256
from meal.errors import CheckpointError, ConfigError, MealError
from meal.models import build_model

log = logging.getLogger(__name__)


#: the fields of a teacher set's `training` block that make up a recipe, as recorded in zoo sidecars
RECIPE_FIELDS: tuple[str, ...] = ("epochs", "optim", "lr", "schedule", "train_subset")


def zoo_entry(zoo: Path, dataset: str, arch: str, seed: int, recipe: str | None = None) -> Path:
    """Path of a zoo checkpoint: ``<zoo>/<dataset>/<arch>-s<seed>.pt``, or ``...-s<seed>-<recipe>.pt``."""
    suffix = f"-{recipe}" if recipe else ""
    return Path(zoo).expanduser() / dataset / f"{arch}-s{seed}{suffix}.pt"


def recipe_of_run(cfg: Any) -> dict[str, Any]:
    """The recipe a `method=ce` run trains with (what its zoo sidecar records under ``recipe``)."""
    return {
        "name": cfg.trainer.zoo_recipe,
        "epochs": int(cfg.trainer.epochs) if cfg.trainer.epochs else None,
        "optim": str(cfg.optim.name),
        "lr": float(cfg.optim.lr),
        "schedule": str(cfg.schedule.name),
        "train_subset": cfg.data.train_subset,
        "batch_size": int(cfg.data.batch_size),
        "weight_decay": float(cfg.optim.weight_decay),
        "augment": str(cfg.data.augment),
    }


def recorded_recipe(info: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe a zoo sidecar records; for sidecars written before recipes, read from its config."""
    if isinstance(info.get("recipe"), dict):
        return info["recipe"]
    config = info.get("config")
    if not isinstance(config, dict):
        return None
    try:
        return {
            "epochs": config["trainer"]["epochs"],
            "optim": config["optim"]["name"],
            "lr": config["optim"]["lr"],
            "schedule": config["schedule"]["name"],
            "train_subset": config["data"]["train_subset"],
        }
    except (KeyError, TypeError):
        return None


def recipe_mismatch(recorded: dict[str, Any], training: Any) -> list[str]:
    """``field=recorded (set asks for asked)`` for each recipe field where a sidecar and a set differ."""
    differences = []
    for name in RECIPE_FIELDS:
        asked, had = getattr(training, name), recorded.get(name)
        same = had == asked if not isinstance(asked, float) else had is not None and float(had) == float(asked)
        if not same:
            differences.append(f"{name}={had} (the set asks for {asked})")
    return differences


def check_recipe(path: Path, info: dict[str, Any], training: Any, key: str) -> None:
    """Refuse a zoo teacher whose sidecar `info` records another recipe than the teacher set's `training` block."""
    recorded = recorded_recipe(info)
    if recorded is None:
        raise ConfigError(
            key,
            f"zoo teacher {path} records no training recipe in {path.with_suffix('.json').name}",
            "retrain it into the zoo, or point teachers.members[i].checkpoint at the file",
        )
    differences = recipe_mismatch(recorded, training)
    if differences:
        raise ConfigError(
            key,
            f"zoo teacher {path} was trained with {', '.join(differences)}",
            "use a teacher set whose `training` block matches the file, or give this recipe its "
            "own name (teachers.training.recipe) so its teachers get their own zoo files",
        )


def training_command(member: Any, cfg: Any) -> str:
    """The exact command that trains a missing zoo teacher."""
    t = cfg.teachers.training
    parts = [
        "python launch.py method=ce teachers=none logger=none",
        f"data={cfg.data.name}",
        f"student.arch={member.arch}",
        f"seed={member.seed}",
        f"trainer.epochs={t.epochs}",
        f"optim={t.optim}",
        f"optim.lr={t.lr}",
        f"schedule={t.schedule}",
        "trainer.export_to_zoo=true",
        f"paths.zoo={cfg.paths.zoo}",
    ]
    if t.train_subset is not None:
        parts.append(f"data.train_subset={t.train_subset}")
    return " ".join(parts)


def export_to_zoo(model: nn.Module, path: Path, info: dict[str, Any]) -> Path:
    """Write a model's state dict (torchvision format) and its JSON sidecar atomically."""
    import io

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_json(path.with_suffix(".json"), info | {"sha256": file_sha256(path), "file": path.name})
    log.info("exported %s to the zoo: %s", info.get("arch"), path)
    return path


def member_name(member: Any) -> str:
    """Display name of a teacher member."""
    if member.name:
        return str(member.name)
    if member.checkpoint:
        return Path(member.checkpoint).stem
    return f"{member.arch}-s{member.seed}"


def _check_sidecar(path: Path, data: Any, key: str, required: bool) -> tuple[str, dict[str, Any]]:
    """Check a teacher file against its JSON sidecar; return the file's SHA-256 and the parsed sidecar ({} if none).

    A zoo entry (`required`) is used only with a sidecar that parses and records the file's SHA-256. An
    explicit checkpoint may come without a sidecar; one it has must parse and match the file too.
    """
    sha256 = file_sha256(path)
    sidecar = path.with_suffix(".json")
    if required:
        fix = f"delete {path} and {sidecar.name}, then train it again with teachers.train_missing=true"
    else:
        fix = f"restore the file, or delete {sidecar} if the file was replaced on purpose"
    if not sidecar.exists():
        if required:
            raise CheckpointError(
                f"{key}: zoo teacher {path} has no sidecar {sidecar.name} to check it against "
                f"({fix}; or name the file in {key}.checkpoint to use it unchecked)"
            )
        return sha256, {}
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{key}: the sidecar {sidecar} of teacher {path} cannot be read ({str(exc).splitlines()[0]}) ({fix})"
        ) from exc
    recorded = info.get("sha256") if isinstance(info, dict) else None
    if recorded is None and (required or not isinstance(info, dict)):
        raise CheckpointError(f"{key}: the sidecar {sidecar} of teacher {path} records no sha256 ({fix})")
    if recorded is not None and recorded != sha256:
        raise CheckpointError(
            f"{key}: teacher {path} does not match the sha256 in its sidecar {sidecar.name} (file "
            f"{sha256[:12]}..., sidecar {str(recorded)[:12]}...): it changed after it was written "
            f"({fix})"
        )
    for field_name, expected in (("classes", data.num_classes), ("in_channels", data.in_channels)):
        if field_name in info and info[field_name] != expected:
            raise ConfigError(
                key,
                f"teacher {path} was trained with {field_name}={info[field_name]}, the data has {expected}",
                "use a teacher trained on this dataset",
            )
    return sha256, info


def _check_fits(model: nn.Module, name: str, data: Any, key: str, device: torch.device) -> None:
    x = torch.zeros(2, data.in_channels, data.image_size, data.image_size, device=device)
    try:
        with torch.no_grad():
            logits = model(x)
    except RuntimeError as exc:
        raise ConfigError(
            key,
            f"teacher '{name}' does not accept {data.in_channels}x{data.image_size}x"
            f"{data.image_size} inputs ({str(exc).splitlines()[0]})",
        ) from exc
    if logits.shape[-1] != data.num_classes:
        raise ConfigError(
            key,
            f"teacher '{name}' predicts {logits.shape[-1]} classes, the data has {data.num_classes}",
            "use a teacher trained on this dataset",
        )


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no gradients: a teacher's weights and BatchNorm statistics never change."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_teachers(
    cfg: Any, data: Any, device: torch.device, train_missing: Callable[[Any, Path], None] | None = None
) -> list[Teacher]:
    """Build and load every member of `cfg.teachers`, training missing zoo entries when allowed."""
    members = list(cfg.teachers.members)
    if not members:
        raise ConfigError(
            "teachers",
            f"method '{cfg.method.name}' needs teachers but the set '{cfg.teachers.name}' is empty",
            "choose a teacher set, e.g. teachers=fmnist_trio",
        )
    teachers: list[Teacher] = []
    for i, member in enumerate(members):
        key = f"teachers.members[{i}]"
        if member.checkpoint:
            path = Path(member.checkpoint).expanduser()
            if not path.is_file():
                raise CheckpointError(
                    f"{key}.checkpoint: teacher file {path} not found (fix the path or remove "
                    "the checkpoint to use the zoo)"
                )
        else:
            path = zoo_entry(Path(cfg.paths.zoo), cfg.data.name, member.arch, member.seed, cfg.teachers.training.recipe)
            if not path.is_file():
                if not (cfg.teachers.train_missing and train_missing is not None):
                    raise MealError(
                        f"{key}: teacher {path} is not in the zoo; train it with: "
                        f"{training_command(member, cfg)} (or set teachers.train_missing=true)"
                    )
                log.info("teacher %s is not in the zoo yet: training it first", member_name(member))
                train_missing(member, path)
        sha256, info = _check_sidecar(path, data, key, required=not member.checkpoint)
        if not member.checkpoint:
            check_recipe(path, info, cfg.teachers.training, key)
        model = build_model(
            member.arch,
            data.num_classes,
            data.in_channels,
            data.image_size,
            pretrained=str(path),
            taps=list(member.taps) if member.taps else None,
            key=f"{key}.arch",
        ).to(device)
        freeze(model)
        _check_fits(model, member_name(member), data, key, device)
        teachers.append(Teacher(member_name(member), model, str(path), sha256))
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise ConfigError("teachers.members", f"teacher names repeat: {names}", "give members distinct names")
    return teachers
