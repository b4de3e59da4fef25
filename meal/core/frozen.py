"""Running frozen teachers: under ``torch.inference_mode`` in the precision their weights are stored in.

A teacher's weights may be stored in bf16 or fp16 (`trainer.teacher_precision`), which halves their
memory; BatchNorm layers keep float32 parameters and statistics (their inputs and outputs are in the
reduced precision, as under autocast). A teacher runs with autocast off: it computes in exactly the
precision of its weights, whatever the student's `trainer.precision`.

Tensors made under inference mode cannot be saved for a backward pass; :func:`usable` turns a
teacher's output into an ordinary float32 tensor that losses on the student may use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def _keeps_float32(module: nn.Module) -> bool:
    return isinstance(module, _BatchNorm)


def cast_frozen(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store a frozen model's floating-point weights and buffers in `dtype` (BatchNorm's stay float32).

    The memory layout of each tensor (e.g. channels_last) is kept. Only for models that are never
    trained again: the tensors are replaced in place.
    """
    for module in model.modules():
        if _keeps_float32(module):
            continue
        for param in module.parameters(recurse=False):
            if param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.is_floating_point() and buffer.dtype != dtype:
                module._buffers[name] = buffer.to(dtype)
    return model


def weight_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a frozen model computes in: that of its first weight outside BatchNorm layers."""
    for module in model.modules():
        if _keeps_float32(module):
            continue
        for param in module.parameters(recurse=False):
            if param.is_floating_point():
                return param.dtype
    return torch.float32


@contextlib.contextmanager
def frozen_mode(device_type: str) -> Iterator[None]:
    """Inference mode with autocast off: no autograd records, each teacher in its own precision."""
    with torch.inference_mode(), torch.autocast(device_type, enabled=False):
        yield


def frozen_input(model: nn.Module, x: Tensor) -> Tensor:
    """`x` cast to the dtype of `model`'s weights (its memory layout kept)."""
    dtype = weight_dtype(model)
    return x if x.dtype == dtype else x.to(dtype)


def usable(t: Tensor) -> Tensor:
    """A float32 tensor that autograd may save: a copy of an inference tensor, `t` itself otherwise."""
    t = t.float()
    return t.clone() if t.is_inference() else t


def teacher_logits(model: nn.Module, x: Tensor) -> Tensor:
    """A frozen model's float32 logits for `x`, usable in losses."""
    with frozen_mode(x.device.type):
        out = model(frozen_input(model, x))
    return usable(out)


def mean_teacher_probs(teacher_logits: Sequence[Tensor], temperature: float = 1.0) -> Tensor:
    """Mean of the teachers' ``softmax(T_i / tau)``: the MEAL V2 soft target (detached).

    Args:
        teacher_logits: one ``(B, K)`` logit tensor per teacher (at least one).
        temperature: softmax temperature.

    Returns:
        ``(B, K)`` probabilities.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if len(teacher_logits) == 0:
        raise ValueError("mean_teacher_probs needs at least one teacher output")
    probs = [F.softmax(t.detach() / temperature, dim=1) for t in teacher_logits]
    return torch.stack(probs, dim=0).mean(dim=0)
