"""Discriminator sizes and losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from meal.errors import ConfigError
from meal.methods.components.discriminator import Discriminator, discriminator_loss, generator_loss


def weight_shapes(d: Discriminator) -> list[tuple[int, ...]]:
    return [tuple(d.fc1.weight.shape), tuple(d.fc2.weight.shape), tuple(d.fc3.weight.shape)]


def test_sizes_k2() -> None:
    d = Discriminator(100, K=2)
    assert weight_shapes(d) == [(50, 100), (25, 50), (2, 25)]
    assert d.widths == (100, 50, 25, 2)


def test_sizes_k8_imagenet() -> None:
    d = Discriminator(1000, K=8)
    assert weight_shapes(d) == [(125, 1000), (15, 125), (2, 15)]


def test_sizes_k8_floor() -> None:
    # 10 // 8 = 1, 10 // 64 = 0 -> floored to 1
    assert weight_shapes(Discriminator(10, K=8)) == [(1, 10), (1, 1), (2, 1)]
    assert weight_shapes(Discriminator(10, K=8, min_hidden=4)) == [(4, 10), (4, 4), (2, 4)]
    with pytest.raises(ConfigError):
        Discriminator(10, K=8, min_hidden=0)
    with pytest.raises(ConfigError):
        Discriminator(10, K=0)


def test_no_leaky_relu_and_output_shape() -> None:
    d = Discriminator(16, K=2)
    assert not any(isinstance(m, nn.LeakyReLU) for m in d.modules())
    assert d(torch.randn(7, 16)).shape == (7, 2)
    with pytest.raises(ValueError):
        d(torch.randn(7, 15))


def set_params(d: Discriminator, fill_last: float) -> None:
    with torch.no_grad():
        for layer in (d.fc1, d.fc2):
            layer.weight.fill_(1.0)
            layer.bias.zero_()
        d.fc3.weight.fill_(fill_last)
        d.fc3.bias.zero_()


@pytest.mark.parametrize("final_relu", [False, True])
def test_final_relu_option(final_relu: bool) -> None:
    d = Discriminator(4, K=2, final_relu=final_relu)
    set_params(d, -1.0)
    out = d(torch.ones(1, 4))
    # fc1: 2 units of 4, fc2: 1 unit of 8, fc3: -8 for both logits
    expected = 0.0 if final_relu else -8.0
    assert out.tolist() == [[expected, expected]]


def bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


# D=4, K=2: 4 -> 2 -> 1 -> 2
W1 = [[0.5, -1.0, 0.25, 0.0], [1.0, 1.0, -0.5, 2.0]]
B1 = [0.1, -0.2]
W2 = [[1.5, -0.5]]
B2 = [0.3]
W3 = [[2.0], [-1.0]]
B3 = [-0.5, 0.25]


def hand_forward(x: list[float]) -> list[float]:
    h1 = [max(0.0, sum(w * v for w, v in zip(row, x, strict=True)) + b) for row, b in zip(W1, B1, strict=True)]
    h2 = [max(0.0, sum(w * v for w, v in zip(row, h1, strict=True)) + b) for row, b in zip(W2, B2, strict=True)]
    return [sum(w * v for w, v in zip(row, h2, strict=True)) + b for row, b in zip(W3, B3, strict=True)]


def fixed_discriminator() -> Discriminator:
    d = Discriminator(4, K=2).double()
    with torch.no_grad():
        for layer, w, b in ((d.fc1, W1, B1), (d.fc2, W2, B2), (d.fc3, W3, B3)):
            layer.weight.copy_(torch.tensor(w, dtype=torch.float64))
            layer.bias.copy_(torch.tensor(b, dtype=torch.float64))
    return d


STUDENT = [[1.0, 0.5, -1.0, 0.2], [0.0, -1.0, 2.0, 1.0]]
TEACHER = [[2.0, 1.0, 0.0, -0.5], [0.3, 0.3, 0.3, 0.3]]


def test_discriminator_loss_hand() -> None:
    d = fixed_discriminator()
    s = torch.tensor(STUDENT, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(TEACHER, dtype=torch.float64, requires_grad=True)
    terms = []
    for row in STUDENT:
        z = hand_forward(row)
        terms += [bce(z[0], 1.0), bce(z[1], 0.0)]
    for row in TEACHER:
        z = hand_forward(row)
        terms += [bce(z[0], 0.0), bce(z[1], 1.0)]
    expected = sum(terms) / len(terms)  # mean over 2B rows x 2 logits
    loss = discriminator_loss(d, s, t)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert t.grad is None
    assert s.grad is not None
    assert d.fc1.weight.grad is not None


def test_generator_loss_hand() -> None:
    d = fixed_discriminator()
    s = torch.tensor(STUDENT, dtype=torch.float64, requires_grad=True)
    terms = []
    for row in STUDENT:
        z = hand_forward(row)
        terms += [bce(z[0], 0.0), bce(z[1], 1.0)]
    loss = generator_loss(d, s)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_detach_and_grl() -> None:
    d = fixed_discriminator()
    s = torch.tensor(STUDENT, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(TEACHER, dtype=torch.float64)
    discriminator_loss(d, s, t).backward()
    plain_s, plain_w = s.grad.clone(), d.fc1.weight.grad.clone()

    s.grad = None
    d.zero_grad()
    loss = discriminator_loss(d, s, t, grl_scale=0.5)
    loss.backward()
    assert torch.allclose(s.grad, -0.5 * plain_s, rtol=1e-12)
    assert torch.allclose(d.fc1.weight.grad, plain_w, rtol=1e-12)

    s.grad = None
    discriminator_loss(d, s, t, detach_student=True).backward()
    assert s.grad is None


def test_loss_shape_errors() -> None:
    d = Discriminator(4)
    with pytest.raises(ValueError):
        discriminator_loss(d, torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError):
        generator_loss(d, torch.zeros(4))
