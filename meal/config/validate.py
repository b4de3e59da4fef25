"""Cross-field checks run before any data is loaded or any model is built.

Single-field types are enforced by the schemas at composition; here go the rules that involve
several keys or allowed value sets. Each failure is a ConfigError naming the key and the fix.
"""

from __future__ import annotations

from typing import Any

from meal.errors import ConfigError

ADVERSARIAL_MODES = ("grl", "joint", "alternating", "none")
SIMILARITIES = ("ce", "l1", "l2", "l1_soft", "l2_soft", "kl")
POOLS = ("avg", "max")
SELECTIONS = ("random", "mean")
SOFT_LABELS = ("online", "cached")
LOGGERS = ("wandb", "none")
LOGGER_MODES = ("auto", "online", "offline", "disabled")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, f"'{value}' is not a valid choice", f"choose one of: {', '.join(allowed)}")


def _positive(key: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(key, f"must be positive, got {value}",
                          f"set {key} to a value > 0" + (" or null" if allow_none else ""))


def _check_blockwise(m: Any) -> None:
    lengths = {k: len(getattr(m, k)) for k in ("out_layer", "out_dims", "gamma", "eta")}
    if lengths["out_layer"] == 0:
        raise ConfigError("method.out_layer", "is empty", "select at least one block, e.g. [-1] for the logits")
    for key in ("out_dims", "gamma", "eta"):
        if lengths[key] != lengths["out_layer"]:
            raise ConfigError(f"method.{key}", f"has {lengths[key]} values but method.out_layer has "
                              f"{lengths['out_layer']}", "give one value per selected block")
    for i, dim in enumerate(m.out_dims):
        _positive(f"method.out_dims[{i}]", dim)
    if len(set(m.out_layer)) != len(m.out_layer):
        raise ConfigError("method.out_layer", f"repeats a block: {list(m.out_layer)}")
    _one_of("method.similarity", m.similarity, SIMILARITIES)
    _one_of("method.pool", m.pool, POOLS)
    _one_of("method.teacher_selection", m.teacher_selection, SELECTIONS)


def _check_method(m: Any) -> None:
    if hasattr(m, "adversarial"):
        _one_of("method.adversarial", m.adversarial, ADVERSARIAL_MODES)
        _positive("method.d_lr", m.d_lr)
        _positive("method.K", m.K)
        _one_of("method.d_optim", m.d_optim, ("sgd", "adam", "adamw"))
        _one_of("method.d_schedule", m.d_schedule, ("student", "constant"))
    if hasattr(m, "temperature"):
        _positive("method.temperature", m.temperature)
    if hasattr(m, "soft_labels"):
        _one_of("method.soft_labels", m.soft_labels, SOFT_LABELS)
    if m.name == "meal_v1":
        _check_blockwise(m)
    if m.name == "kd" and not 0.0 <= m.alpha <= 1.0:
        raise ConfigError("method.alpha", f"must be in [0, 1], got {m.alpha}")


def _check_required(cfg: Any) -> None:
    """A configuration that sets ``student.require_pretrained`` needs the student's starting weights."""
    if cfg.student.get("require_pretrained", False) and not cfg.student.pretrained:
        raise ConfigError("student.pretrained", "this configuration starts the student from trained weights "
                          "(student.require_pretrained=true)",
                          "add student.pretrained=/path/to/weights.pth; the config file says which weights")


def validate(cfg: Any) -> None:
    """Check the composed config's cross-field rules; raise ConfigError on the first violation."""
    from meal.methods import method_class

    method_class(cfg.method.name)
    _check_required(cfg)
    _check_method(cfg.method)
    _positive("optim.lr", cfg.optim.lr)
    _positive("data.batch_size", cfg.data.batch_size)
    _positive("data.eval_batch_size", cfg.data.eval_batch_size)
    _positive("trainer.epochs", cfg.trainer.epochs, allow_none=True)
    _positive("trainer.max_steps", cfg.trainer.max_steps, allow_none=True)
    _one_of("trainer.precision", cfg.trainer.precision, PRECISIONS)
    _one_of("trainer.teacher_precision", cfg.trainer.teacher_precision, PRECISIONS)
    _one_of("logger.name", cfg.logger.name, LOGGERS)
    _one_of("logger.mode", cfg.logger.mode, LOGGER_MODES)
    if cfg.teachers.members:
        _positive("teachers.training.epochs", cfg.teachers.training.epochs)
