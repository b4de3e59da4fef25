"""Optimizers and learning-rate schedules (`optim=` and `schedule=` groups).

A schedule is a multiplier of the base LR as a function of training progress in epochs
(fractional: `step / steps_per_epoch`), applied at every step. It holds no state of its own, so
a resumed run continues the same curve from its step count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from meal.config.schema import OptimizerName, ScheduleName
from meal.core.optim import fused_optimizer
from meal.errors import ConfigError

SCHEDULES = ScheduleName.values()
OPTIMIZERS = OptimizerName.values()


def resolve_epochs(trainer_cfg: Any, schedule_cfg: Any) -> int:
    """The run length: `trainer.epochs`, or 350a for `schedule=meal_step` when it is unset."""
    epochs = trainer_cfg.epochs
    if epochs is None:
        if schedule_cfg.name != "meal_step":
            raise ConfigError(
                "trainer.epochs", f"is unset and schedule '{schedule_cfg.name}' has no length", "set trainer.epochs=N"
            )
        epochs = round(350 * schedule_cfg.factor)
        if epochs <= 0:
            raise ConfigError(
                "schedule.factor",
                f"gives a run of 350 x {schedule_cfg.factor} = 0 epochs",
                "use schedule.factor >= 0.002, or set trainer.epochs=N",
            )
    if epochs <= 0:
        raise ConfigError("trainer.epochs", f"must be positive, got {epochs}")
    return int(epochs)


def lr_multiplier(cfg: Any, total_epochs: int, stretch: float = 1.0) -> Callable[[float], float]:
    """Return f(epoch_progress) -> LR multiplier for the schedule `cfg`.

    `stretch` > 1 plays the schedule `stretch` times slower (its boundaries, warm-up and cosine span in
    epochs all multiplied), for a run made `stretch` times longer (``method.epochs_per_teacher``);
    `total_epochs` is the stretched run's length.
    """
    if stretch <= 0:
        raise ValueError(f"stretch must be positive, got {stretch}")
    if stretch != 1.0:
        inner = lr_multiplier(cfg, max(round(total_epochs / stretch), 1))
        return lambda e: inner(e / stretch)
    if cfg.name not in SCHEDULES:
        raise ConfigError("schedule.name", f"unknown schedule '{cfg.name}'", f"choose one of: {', '.join(SCHEDULES)}")
    warmup = float(cfg.warmup_epochs)

    def with_warmup(inner: Callable[[float], float]) -> Callable[[float], float]:
        if warmup <= 0:
            return inner
        return lambda e: inner(e) * min(1.0, (e + 1e-12) / warmup) if e < warmup else inner(e)

    if cfg.name == "meal_step":
        if cfg.factor <= 0:
            raise ConfigError("schedule.factor", f"must be positive, got {cfg.factor}")
        bounds = (150 * cfg.factor, 250 * cfg.factor)
        return with_warmup(lambda e: 1.0 if e < bounds[0] else (0.1 if e < bounds[1] else 0.01))
    if cfg.name == "multistep":
        milestones = sorted(float(m) for m in cfg.milestones)
        return with_warmup(lambda e: cfg.decay ** sum(e >= m for m in milestones))
    if cfg.name == "cosine":
        span = max(total_epochs - warmup, 1e-12)

        def cosine(e: float) -> float:
            t = min(max(e - warmup, 0.0) / span, 1.0)
            return cfg.min_lr + (1.0 - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

        return with_warmup(cosine)
    return with_warmup(lambda e: 1.0)


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Any, key: str = "optim") -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, weight decay) or AdamW from an optimizer config."""
    if cfg.lr <= 0:
        raise ConfigError(f"{key}.lr", f"must be positive, got {cfg.lr}")
    if cfg.name == "sgd":
        return fused_optimizer(
            torch.optim.SGD,
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.name in ("adamw", "adam"):
        return fused_optimizer(
            torch.optim.AdamW, params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    raise ConfigError(f"{key}.name", f"unknown optimizer '{cfg.name}'", f"choose one of: {', '.join(OPTIMIZERS)}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group of `optimizer` to `lr`."""
    for group in optimizer.param_groups:
        group["lr"] = lr
