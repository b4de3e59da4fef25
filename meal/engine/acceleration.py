"""Speed settings applied to the models of a run: channels_last memory layout and torch.compile."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)


def to_channels_last(models: Sequence[nn.Module]) -> None:
    """Store 4-d weights in channels_last layout (faster convolutions with cuDNN and oneDNN)."""
    for model in models:
        model.to(memory_format=torch.channels_last)


def try_compile(model: nn.Module, name: str) -> bool:
    """Compile a model in place (``nn.Module.compile``: state-dict keys unchanged).

    Where compilation is not available or fails, the model stays eager and a log line says so.
    """
    if not hasattr(model, "compile"):
        log.warning("trainer.compile: torch %s cannot compile modules in place; %s stays eager",
                    torch.__version__, name)
        return False
    try:
        model.compile()
    except Exception as exc:  # compiler back ends fail in many ways; eager always works
        log.warning("trainer.compile: compiling %s failed (%s: %s); it stays eager", name, type(exc).__name__, exc)
        return False
    log.info("trainer.compile: %s compiled", name)
    return True
