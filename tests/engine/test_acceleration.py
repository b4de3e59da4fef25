"""channels_last and compile settings."""

from __future__ import annotations

import logging

import pytest
import torch

from meal.engine.acceleration import to_channels_last, try_compile
from meal.models import build_model


def test_channels_last_keeps_outputs() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        to_channels_last([model])
        after = model(x.contiguous(memory_format=torch.channels_last))
    conv = model.net.conv1.weight if hasattr(model.net, "conv1") else next(
        p for p in model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_compile_failure_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    model = build_model("fmnist_tiny", 10, 1, 28)

    def broken(self: torch.nn.Module, *args: object, **kwargs: object) -> None:
        raise RuntimeError("no compiler back end")

    monkeypatch.setattr(torch.nn.Module, "compile", broken)
    with caplog.at_level(logging.WARNING):
        assert try_compile(model, "student") is False
    assert "compiling student failed (RuntimeError: no compiler back end); it stays eager" in caplog.text
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
