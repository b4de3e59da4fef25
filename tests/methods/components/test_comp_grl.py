"""Gradient reversal."""

from __future__ import annotations

import pytest
import torch

from meal.methods.components.grl import grad_reverse


def loss_fn(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=x.dtype)
    return (x**3 * w).sum() + x.sin().sum()


@pytest.mark.parametrize("scale", [1.0, 0.25, 3.0])
def test_gradient_is_reversed_and_scaled(scale: float) -> None:
    values = [0.3, -1.2, 2.0, 0.7]
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    loss_fn(x).backward()
    plain = x.grad.clone()
    # d/dx = 3 x^2 w + cos x
    w = [1.0, -2.0, 0.5, 3.0]
    expected = torch.tensor([3 * v * v * wi for v, wi in zip(values, w, strict=True)], dtype=torch.float64)
    expected += torch.tensor(values, dtype=torch.float64).cos()
    assert torch.allclose(plain, expected, rtol=1e-12)

    y = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    out = grad_reverse(y, scale)
    assert torch.equal(out, y)
    loss_fn(out).backward()
    assert torch.allclose(y.grad, -scale * plain, rtol=1e-12)


def test_default_scale_is_one_and_only_upstream_is_reversed() -> None:
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 4).double()
    b = torch.nn.Linear(4, 1).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    b(a(x)).sum().backward()
    ga, gb = a.weight.grad.clone(), b.weight.grad.clone()
    a.zero_grad()
    b.zero_grad()
    b(grad_reverse(a(x))).sum().backward()
    assert torch.allclose(a.weight.grad, -ga)
    assert torch.allclose(b.weight.grad, gb)


def test_negative_scale_refused() -> None:
    with pytest.raises(ValueError):
        grad_reverse(torch.zeros(2), -1.0)
