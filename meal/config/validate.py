"""Cross-field checks run before any data is loaded or any model is built.

Single-field types, choice keys' allowed values included, are enforced by the schemas at composition;
here go each numeric key's declared range (:mod:`meal.config.ranges`), devices, and the rules that
involve several keys. Each failure is a ConfigError naming the key and the fix.
"""

from __future__ import annotations

import re
from typing import Any

from meal.config.choices import two_betas
from meal.config.ranges import check_ranges
from meal.config.schema import MealConfig
from meal.errors import ConfigError

DEVICE_FORM = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"


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


def _check_optim(o: Any) -> None:
    two_betas("optim.betas", o.betas)
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
    from meal.engine.schedule import resolve_epochs
    from meal.methods.registry import method_class

    method = method_class(cfg.method.name)
    check_ranges(cfg, MealConfig)
    check_ranges(cfg.method, method.schema, "method")
    _check_required(cfg)
    method.check_config(cfg.method)
    _check_optim(cfg.optim)
    resolve_epochs(cfg.trainer, cfg.schedule)
    _check_device("trainer.device", cfg.trainer.device)
