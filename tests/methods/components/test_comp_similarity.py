"""Similarity losses checked against the formulas, evaluated with python floats."""

from __future__ import annotations

import math

import pytest
import torch

from meal.core.frozen import mean_teacher_probs
from meal.errors import ConfigError
from meal.methods.components.similarity import (
    SIMILARITY_KINDS,
    kl_to_probs,
    similarity_loss,
    soft_cross_entropy,
    weighted_similarity_loss,
)

S = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
T = [[0.5, 0.1, 2.0], [1.0, 1.0, 0.0]]


def softmax_row(row: list[float], tau: float = 1.0) -> list[float]:
    exps = [math.exp(v / tau) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def hand_ce(s: list[list[float]], t: list[list[float]], tau: float) -> float:
    rows = []
    for srow, trow in zip(s, t, strict=True):
        p = softmax_row(trow, tau)
        q = softmax_row(srow, tau)
        rows.append(-sum(pi * math.log(qi) for pi, qi in zip(p, q, strict=True)))
    return sum(rows) / len(rows)


def hand_kl(s: list[list[float]], t: list[list[float]], tau: float) -> float:
    rows = []
    for srow, trow in zip(s, t, strict=True):
        p = softmax_row(trow, tau)
        q = softmax_row(srow, tau)
        rows.append(sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True)))
    return sum(rows) / len(rows) * tau * tau


def hand_elementwise(a: list[list[float]], b: list[list[float]], power: int) -> float:
    diffs = [abs(x - y) ** power for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]
    return sum(diffs) / len(diffs)


def tensors(requires_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.tensor(S, dtype=torch.float64, requires_grad=requires_grad)
    t = torch.tensor(T, dtype=torch.float64, requires_grad=requires_grad)
    return s, t


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
def test_ce_matches_formula(tau: float) -> None:
    s, t = tensors()
    assert similarity_loss(s, t, "ce", tau).item() == pytest.approx(hand_ce(S, T, tau), rel=1e-12)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_kl_matches_formula(tau: float) -> None:
    s, t = tensors()
    assert similarity_loss(s, t, "kl", tau).item() == pytest.approx(hand_kl(S, T, tau), rel=1e-12)


def test_l1_l2_are_elementwise_means() -> None:
    s, t = tensors()
    # |diffs| = .5 1.9 1.5 / 1 2 3 -> mean 9.9 / 6
    assert similarity_loss(s, t, "l1").item() == pytest.approx(9.9 / 6, rel=1e-12)
    assert similarity_loss(s, t, "l1").item() == pytest.approx(hand_elementwise(S, T, 1), rel=1e-12)
    expected_l2 = (0.25 + 3.61 + 2.25 + 1.0 + 4.0 + 9.0) / 6
    assert similarity_loss(s, t, "l2").item() == pytest.approx(expected_l2, rel=1e-12)
    # the temperature does not affect the raw distances
    assert similarity_loss(s, t, "l2", 5.0).item() == pytest.approx(expected_l2, rel=1e-12)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_soft_l1_l2_compare_softmaxes(tau: float) -> None:
    s, t = tensors()
    ps = [softmax_row(r, tau) for r in S]
    pt = [softmax_row(r, tau) for r in T]
    assert similarity_loss(s, t, "l1_soft", tau).item() == pytest.approx(hand_elementwise(ps, pt, 1), rel=1e-12)
    assert similarity_loss(s, t, "l2_soft", tau).item() == pytest.approx(hand_elementwise(ps, pt, 2), rel=1e-12)


@pytest.mark.parametrize("kind", SIMILARITY_KINDS)
def test_teacher_gets_no_gradient(kind: str) -> None:
    s, t = tensors()
    loss = similarity_loss(s, t, kind)
    assert loss.dim() == 0
    loss.backward()
    assert t.grad is None
    assert s.grad is not None
    assert s.grad.abs().sum().item() > 0


def test_ce_gradient_is_q_minus_p() -> None:
    tau = 2.0
    s, t = tensors()
    similarity_loss(s, t, "ce", tau).backward()
    batch = len(S)
    for b in range(batch):
        p = softmax_row(T[b], tau)
        q = softmax_row(S[b], tau)
        for k in range(3):
            expected = (q[k] - p[k]) / (tau * batch)
            assert s.grad[b, k].item() == pytest.approx(expected, rel=1e-10)


def test_soft_targets_with_zero_probability() -> None:
    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([[0.7, 0.3, 0.0], [0.2, 0.2, 0.6]], dtype=torch.float64, requires_grad=True)
    pl = p.tolist()
    ce_rows, kl_rows = [], []
    for srow, prow in zip(s.tolist(), pl, strict=True):
        q = softmax_row(srow)
        ce_rows.append(-sum(pi * math.log(qi) for pi, qi in zip(prow, q, strict=True)))
        kl_rows.append(sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(prow, q, strict=True) if pi > 0))
    ce = soft_cross_entropy(s, p)
    kl = kl_to_probs(s, p)
    assert ce.item() == pytest.approx(sum(ce_rows) / 2, rel=1e-12)
    assert kl.item() == pytest.approx(sum(kl_rows) / 2, rel=1e-12)
    (ce + kl).backward()
    assert p.grad is None
    assert torch.isfinite(s.grad).all()


def test_kl_to_probs_temperature_scaling() -> None:
    tau = 4.0
    s = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    p = [0.25, 0.75]
    q = softmax_row([1.0, -2.0], tau)
    expected = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True)) * tau**2
    got = kl_to_probs(s, torch.tensor([p], dtype=torch.float64), tau)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_mean_teacher_probs() -> None:
    t1 = [[0.0, 1.0], [2.0, 2.0]]
    t2 = [[3.0, -1.0], [0.0, 1.0]]
    got = mean_teacher_probs([torch.tensor(t1, dtype=torch.float64), torch.tensor(t2, dtype=torch.float64)])
    for b in range(2):
        a, c = softmax_row(t1[b]), softmax_row(t2[b])
        for k in range(2):
            assert got[b, k].item() == pytest.approx((a[k] + c[k]) / 2, rel=1e-12)
    with pytest.raises(ValueError):
        mean_teacher_probs([])


def test_weighted_similarity_loss() -> None:
    s, t = tensors()
    got = weighted_similarity_loss([s, s], [t, t], [0.5, 2.0], "l1")
    assert got.item() == pytest.approx(2.5 * 9.9 / 6, rel=1e-12)
    with pytest.raises(ValueError):
        weighted_similarity_loss([s], [t, t], [1.0], "l1")


def test_unknown_kind_is_config_error() -> None:
    s, t = tensors()
    with pytest.raises(ConfigError) as info:
        similarity_loss(s, t, "cosine")
    assert info.value.key == "method.similarity"
    assert "cosine" in str(info.value)


def test_bad_temperature_and_shapes() -> None:
    s, t = tensors()
    with pytest.raises(ConfigError):
        similarity_loss(s, t, "ce", 0.0)
    with pytest.raises(ValueError):
        similarity_loss(s, t[:, :2], "l1")
    with pytest.raises(ValueError):
        similarity_loss(s.reshape(2, 3, 1), t.reshape(2, 3, 1), "ce")
