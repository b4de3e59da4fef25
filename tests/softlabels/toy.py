"""Tiny synthetic data, teachers and configs for the soft-label and distillation tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from meal.config.schema import DataConfig
from meal.core.teacher import Teacher
from meal.data import DataBundle, build_data
from meal.engine.checkpoint import file_sha256
from meal.methods.registry import method_class
from meal.models import build_model
from meal.teachers import freeze

CLASSES = 10
SIZE = 12


def data_cfg(
    augment: str = "pad_crop_flip",
    pad: int = 1,
    train_size: int = 40,
    batch_size: int = 16,
    channels: int = 1,
    size: int = SIZE,
) -> DictConfig:
    """A synthetic-data config."""
    return OmegaConf.structured(
        DataConfig(
            name="synthetic",
            num_classes=CLASSES,
            in_channels=channels,
            image_size=size,
            train_size=train_size,
            test_size=16,
            batch_size=batch_size,
            eval_batch_size=64,
            augment=augment,
            pad=pad,
            mean=[0.5] * channels,
            std=[0.25] * channels,
        )
    )


def toy_data(cfg: DictConfig, seed: int = 0) -> DataBundle:
    """The data bundle of a synthetic-data config, on the CPU."""
    return build_data(cfg, Path("/nonexistent"), seed, torch.device("cpu"))


def sharpen(model: nn.Module, factor: float = 60.0) -> nn.Module:
    """Scale the last linear layer so the outputs are far from uniform (makes mismatches visible)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(factor)
    return model


def toy_teacher(
    seed: int, channels: int = 1, size: int = SIZE, classes: int = CLASSES, arch: str = "fmnist_tiny"
) -> nn.Module:
    """A frozen, randomly initialised small CNN."""
    torch.manual_seed(seed)
    return freeze(sharpen(build_model(arch, classes, channels, size)))


def save_teachers(
    tmp_path: Path, seeds: tuple[int, ...] = (1, 2), channels: int = 1, size: int = SIZE, classes: int = CLASSES
) -> list[Path]:
    """Write teacher state-dict files (torchvision format) and return their paths."""
    paths = []
    for seed in seeds:
        path = tmp_path / f"teacher{seed}.pt"
        torch.save(toy_teacher(seed, channels, size, classes).state_dict(), path)
        paths.append(path)
    return paths


def load_teacher_files(paths: list[Path], channels: int = 1, size: int = SIZE, classes: int = CLASSES) -> list[Teacher]:
    """Teachers loaded from files, carrying their files' SHA-256 as the zoo does."""
    return [
        Teacher(
            p.stem,
            freeze(build_model("fmnist_tiny", classes, channels, size, pretrained=str(p))),
            str(p),
            file_sha256(p),
        )
        for p in paths
    ]


def toy_teachers(seeds: tuple[int, ...] = (1, 2), channels: int = 1, size: int = SIZE) -> list[Teacher]:
    """In-memory teachers (no file: the cache key hashes their weights)."""
    return [Teacher(f"t{s}", toy_teacher(s, channels, size)) for s in seeds]


def method_cfg(name: str = "meal_v2", **overrides: Any) -> DictConfig:
    """A method config from its schema, with overrides."""
    return OmegaConf.structured(method_class(name).schema(**overrides))


def run_cfg(data: DictConfig, cache_dir: Path) -> DictConfig:
    """The parts of a run config that Method.prepare reads."""
    return OmegaConf.create({"data": OmegaConf.to_container(data), "paths": {"cache_dir": str(cache_dir)}})
