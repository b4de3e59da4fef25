"""Speed settings applied to the models of a run: precision, channels_last memory layout, torch.compile.

``trainer.precision`` is the student's autocast dtype. ``trainer.teacher_precision`` is the dtype the
frozen teachers' weights are stored and computed in (``auto``: the student's precision), see
:mod:`meal.core.frozen`. ``auto`` means bf16 on CUDA and fp32 on the CPU.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from meal.config.choices import one_of
from meal.config.schema import Precision
from meal.core.frozen import cast_frozen

log = logging.getLogger(__name__)

COMPILER_MODULES = ("torch._dynamo", "torch._inductor")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = Precision.values()


def resolve_precision(name: str, device: torch.device, key: str = "trainer.precision") -> torch.dtype | None:
    """The reduced dtype a precision name stands for (None = fp32). auto: bf16 on CUDA, fp32 on CPU."""
    one_of(key, name, PRECISIONS)
    if name == "auto":
        name = "bf16" if device.type == "cuda" else "fp32"
    return DTYPES[name]


def teacher_dtype(trainer_cfg: Any, device: torch.device) -> torch.dtype:
    """The dtype of the teachers' weights: `trainer.teacher_precision`, auto = the student's precision."""
    name = trainer_cfg.teacher_precision
    if name == "auto":
        dtype = resolve_precision(trainer_cfg.precision, device)
    else:
        dtype = resolve_precision(name, device, "trainer.teacher_precision")
    return dtype or torch.float32


def to_channels_last(models: Sequence[nn.Module]) -> None:
    """Store 4-d weights in channels_last layout (faster convolutions with cuDNN and oneDNN)."""
    for model in models:
        model.to(memory_format=torch.channels_last)


def _is_compile_error(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) comes from the compiler stack rather than from the model."""
    while exc is not None:
        if type(exc).__module__.startswith(COMPILER_MODULES):
            return True
        exc = exc.__cause__
    return False


def try_compile(model: nn.Module, name: str) -> bool:
    """Compile a model's forward in place (state-dict keys and hooks unchanged); returns whether it was set up.

    ``torch.compile`` compiles on the first call. Where compilation is not available, or fails on a
    call (no compiler back end, an unsupported operator), a log line says so and the model runs eager
    from then on. Compile a model after any copies of it are made: a copy shares the compiled forward.
    """
    if not hasattr(torch, "compile"):
        log.warning("trainer.compile: torch %s cannot compile; %s stays eager", torch.__version__, name)
        return False
    had_own_forward = "forward" in model.__dict__
    eager = model.forward
    try:
        compiled = torch.compile(eager)
    except Exception as exc:  # compiler back ends fail in many ways; eager always works
        log.warning("trainer.compile: compiling %s failed (%s: %s); it stays eager", name, type(exc).__name__, exc)
        return False

    def restore_eager() -> None:
        if had_own_forward:
            model.forward = eager
        else:
            del model.forward

    @functools.wraps(eager)
    def forward(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except Exception as exc:
            if not _is_compile_error(exc):
                raise
            first_line = (str(exc).strip().splitlines() or [""])[0]
            log.warning(
                "trainer.compile: compiling %s failed (%s: %s); it runs eager from now on",
                name,
                type(exc).__name__,
                first_line,
            )
            restore_eager()
            return eager(*args, **kwargs)

    model.forward = forward
    log.info("trainer.compile: %s will be compiled on its first call", name)
    return True


def accelerate(
    trainer_cfg: Any, student: nn.Module, teachers: Sequence[tuple[str, nn.Module]], device: torch.device
) -> None:
    """Apply `trainer.channels_last`, `trainer.teacher_precision` and `trainer.compile` to a run's models.

    Call it after any soft-label cache was built: caches hold float32 teacher outputs.
    """
    models = [student, *(model for _, model in teachers)]
    if trainer_cfg.channels_last:
        to_channels_last(models)
    dtype = teacher_dtype(trainer_cfg, device)
    if teachers and dtype != torch.float32:
        for _, model in teachers:
            cast_frozen(model, dtype)
        log.info("teachers stored and run in %s under inference mode", str(dtype).removeprefix("torch."))
    if trainer_cfg.compile:
        for name, model in [("student", student), *teachers]:
            try_compile(model, name)
