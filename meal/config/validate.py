"""Cross-field checks run before any data is loaded or any model is built.

Single-field types are enforced by the schemas at composition; here go each numeric key's declared
range (:mod:`meal.config.ranges`), allowed value sets, devices, and the rules that involve several
keys. Each failure is a ConfigError naming the key and the fix.
"""

from __future__ import annotations

import re
from typing import Any

from meal.config.ranges import check_ranges
from meal.config.schema import METHOD_SCHEMAS, MealConfig
from meal.errors import ConfigError

ADVERSARIAL_MODES = ("grl", "joint", "alternating", "none")
SIMILARITIES = ("ce", "l1", "l2", "l1_soft", "l2_soft", "kl")
POOLS = ("avg", "max")
SELECTIONS = ("random", "mean")
SOFT_LABELS = ("online", "cached")
LOGGERS = ("wandb", "none")
LOGGER_MODES = ("auto", "online", "offline", "disabled")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PROGRESS = ("auto", "bar", "log", "off")
NONFINITE = ("stop", "skip")
DEVICE_FORM = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, f"'{value}' is not a valid choice", f"choose one of: {', '.join(allowed)}")


def _check_device(key: str, name: str) -> None:
    """`name` is a device form this machine has: auto, cpu, cuda, cuda:N (N < the GPU count) or mps."""
    if not DEVICE_FORM.fullmatch(name):
        raise ConfigError(key, f"'{name}' is not a device", f"use {DEVICE_FORMS}")
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(key, "CUDA was asked for but is not available", f"use {key}=auto")
        index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise ConfigError(
                key, f"there is no GPU {index}: this machine has {count}", f"use cuda:0..cuda:{count - 1} or auto"
            )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(key, "the Apple MPS device is not available on this machine", f"use {key}=auto or cpu")


def _check_blockwise(m: Any) -> None:
    lengths = {k: len(getattr(m, k)) for k in ("out_layer", "out_dims", "gamma", "eta")}
    if lengths["out_layer"] == 0:
        raise ConfigError("method.out_layer", "is empty", "select at least one block, e.g. [-1] for the logits")
    for key in ("out_dims", "gamma", "eta"):
        if lengths[key] != lengths["out_layer"]:
            raise ConfigError(
                f"method.{key}",
                f"has {lengths[key]} values but method.out_layer has {lengths['out_layer']}",
                "give one value per selected block",
            )
    if len(set(m.out_layer)) != len(m.out_layer):
        raise ConfigError("method.out_layer", f"repeats a block: {list(m.out_layer)}")
    _one_of("method.similarity", m.similarity, SIMILARITIES)
    _one_of("method.pool", m.pool, POOLS)
    _one_of("method.teacher_selection", m.teacher_selection, SELECTIONS)


def _check_method(m: Any) -> None:
    if hasattr(m, "adversarial"):
        _one_of("method.adversarial", m.adversarial, ADVERSARIAL_MODES)
        _one_of("method.d_optim", m.d_optim, ("sgd", "adam", "adamw"))
        _one_of("method.d_schedule", m.d_schedule, ("student", "constant"))
        _two_betas("method.d_betas", m.d_betas)
    if hasattr(m, "soft_labels"):
        from meal.softlabels.spec import DTYPES

        _one_of("method.soft_labels", m.soft_labels, SOFT_LABELS)
        _one_of("method.cache_dtype", m.cache_dtype, tuple(DTYPES))
    if m.name == "meal_v2":
        from meal.methods.meal_v2 import LOSSES

        _one_of("method.loss", m.loss, LOSSES)
    if m.name == "meal_v1":
        _check_blockwise(m)


def _two_betas(key: str, betas: Any) -> None:
    if len(betas) != 2:
        raise ConfigError(key, f"needs 2 values (beta1, beta2), got {list(betas)}", f"e.g. {key}=[0.9,0.999]")


def _check_optim(o: Any) -> None:
    from meal.engine.schedule import OPTIMIZERS

    _one_of("optim.name", o.name, OPTIMIZERS)
    _two_betas("optim.betas", o.betas)
    if o.name == "sgd" and o.nesterov and o.momentum == 0:
        raise ConfigError(
            "optim.nesterov",
            "Nesterov momentum needs a momentum, but optim.momentum is 0",
            "set optim.momentum > 0 or optim.nesterov=false",
        )


def _check_required(cfg: Any) -> None:
    """A configuration that sets ``student.require_pretrained`` needs the student's starting weights."""
    if cfg.student.get("require_pretrained", False) and not cfg.student.pretrained:
        raise ConfigError(
            "student.pretrained",
            "this configuration starts the student from trained weights (student.require_pretrained=true)",
            "add student.pretrained=/path/to/weights.pth; the config file says which weights",
        )


def validate(cfg: Any) -> None:
    """Check the composed config's cross-field rules; raise ConfigError on the first violation."""
    from meal.engine.schedule import OPTIMIZERS, SCHEDULES, resolve_epochs
    from meal.methods import method_class

    method_class(cfg.method.name)
    check_ranges(cfg, MealConfig)
    check_ranges(cfg.method, METHOD_SCHEMAS[cfg.method.name], "method")
    _check_required(cfg)
    _check_method(cfg.method)
    _check_optim(cfg.optim)
    _one_of("schedule.name", cfg.schedule.name, SCHEDULES)
    _one_of("teachers.training.optim", cfg.teachers.training.optim, OPTIMIZERS)
    _one_of("teachers.training.schedule", cfg.teachers.training.schedule, SCHEDULES)
    resolve_epochs(cfg.trainer, cfg.schedule)
    _check_device("trainer.device", cfg.trainer.device)
    _one_of("trainer.precision", cfg.trainer.precision, PRECISIONS)
    _one_of("trainer.teacher_precision", cfg.trainer.teacher_precision, PRECISIONS)
    _one_of("trainer.progress", cfg.trainer.progress, PROGRESS)
    _one_of("trainer.nonfinite", cfg.trainer.nonfinite, NONFINITE)
    _one_of("logger.name", cfg.logger.name, LOGGERS)
    _one_of("logger.mode", cfg.logger.mode, LOGGER_MODES)
