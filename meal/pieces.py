"""The pieces of a run, built one way for every entry point: device, data, student, teachers and method.

``meal.app.train`` (training), ``python -m meal.softlabels`` (building a soft-label cache ahead of a sweep)
and ``python -m meal.bench`` (timing training steps) all build what they train on with
:func:`build_pieces`, so a cache, a benchmark and a run see the same data split, augmentation, student
and teachers for the same config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from meal.core.teacher import Teacher
from meal.data import DataBundle, build_data
from meal.data.checks import check_not_empty
from meal.engine import distributed
from meal.engine.acceleration import accelerate
from meal.engine.environment import configure_determinism, configure_threads, seed_everything, select_device
from meal.methods import Method, build_method, method_class
from meal.models import build_model
from meal.preflight import check_before_work
from meal.teachers import freeze, load_teachers, member_name

log = logging.getLogger(__name__)

#: trains one missing zoo teacher (a teacher-set member) into the given zoo file
TrainMissingTeacher = Callable[[Any, Path], None]


@dataclass
class RunPieces:
    """What a run trains on: the device, the data, the student (None when not asked for) and the teachers."""

    device: torch.device
    data: DataBundle
    student: torch.nn.Module | None
    teachers: list[Teacher] = field(default_factory=list)


def build_student(cfg: DictConfig, data: DataBundle, device: torch.device) -> torch.nn.Module:
    """The run's student (`student.arch`, from `student.pretrained` when set) on `device`."""
    s = cfg.student
    return build_model(
        s.arch,
        data.num_classes,
        data.in_channels,
        data.image_size,
        pretrained=s.pretrained,
        taps=list(s.taps) if s.taps else None,
        key="student.arch",
    ).to(device)


def random_teachers(cfg: DictConfig, data: DataBundle, device: torch.device) -> list[Teacher]:
    """The teacher set's architectures with random weights (for speed measurements only)."""
    return [
        Teacher(
            member_name(m),
            freeze(
                build_model(
                    m.arch, data.num_classes, data.in_channels, data.image_size, key=f"teachers.members[{i}].arch"
                ).to(device)
            ),
        )
        for i, m in enumerate(cfg.teachers.members)
    ]


def build_pieces(
    cfg: DictConfig,
    *,
    dist: distributed.DistInfo | None = None,
    train_missing: TrainMissingTeacher | None = None,
    student: bool = True,
    teachers: str = "zoo",
    checked: bool = False,
) -> RunPieces:
    """Build a run's device, data, student and teachers, in the order and with the seeds a training run uses.

    Args:
        cfg: the composed run config.
        dist: this process's place in a data-parallel job (one process when None): the device and the share
            of each batch; with `trainer.sync_batchnorm` the student's BatchNorm layers synchronise.
        train_missing: trains a zoo teacher the teacher set lacks; None refuses a missing one.
        student: whether to build the student.
        teachers: ``"zoo"`` loads the teacher set (when the method uses teachers), ``"random"`` builds its
            architectures with random weights, ``"none"`` builds none.
        checked: the caller has run :func:`meal.preflight.check_before_work` already.
    """
    dist = dist or distributed.DistInfo()
    if not checked:
        check_before_work(cfg)  # config, student and teacher structure: before any data, teacher or file
    configure_threads(cfg.trainer.threads)
    seed_everything(int(cfg.seed))  # the same initial weights on every rank
    configure_determinism(cfg.trainer.deterministic)
    device = select_device(cfg.trainer.device) if dist.device is None else dist.device
    data = build_data(cfg.data, Path(cfg.paths.data_dir), int(cfg.seed), device, dist.rank, dist.world_size)
    check_not_empty(cfg.data, data)
    model = build_student(cfg, data, device) if student else None
    if model is not None and cfg.trainer.sync_batchnorm:
        distributed.sync_batchnorm(model, dist)
    if teachers == "random":
        members = random_teachers(cfg, data, device)
    elif teachers == "zoo" and method_class(cfg.method.name).uses_teachers:
        members = load_teachers(cfg, data, device, train_missing)
    else:
        members = []
    return RunPieces(device, data, model, members)


def build_run_method(cfg: DictConfig, pieces: RunPieces) -> Method:
    """The configured method around the pieces' student and teachers, prepared on the run's data (an opened
    or built soft-label cache), with `trainer.channels_last`, `teacher_precision` and `compile` applied."""
    if pieces.student is None:
        raise ValueError("build_run_method needs pieces built with a student")
    method = build_method(cfg.method, pieces.student, pieces.teachers, pieces.data.num_classes, int(cfg.seed))
    method = method.to(pieces.device)
    method.prepare(pieces.data, cfg)
    accelerate(cfg.trainer, pieces.student, [(t.name, t.model) for t in pieces.teachers], pieces.device)
    return method
