"""Decoupled KD: its two terms against a hand computation, KD's decomposition into them, the warmup, and the
same loss from cached soft labels."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from meal.data import Batch
from meal.methods import build_method, method_names
from meal.methods.dkd import DecoupledKD, dkd_terms
from meal.models import build_model
from tests.conftest import compose_config
from tests.softlabels.toy import SIZE, data_cfg, method_cfg, run_cfg, toy_data, toy_teachers

LOGITS = [[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4], [-1.0, 3.0, 0.5, 1.5]]
PROBS = [[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.4, 0.1], [0.05, 0.05, 0.3, 0.6]]
LABELS = [0, 2, 1]


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def _hand_terms(tau: float) -> tuple[float, float]:
    """TCKD and NCKD written out with Python floats, row by row."""
    tckd = nckd = 0.0
    for z, p, t in zip(LOGITS, PROBS, LABELS, strict=True):
        q = _softmax([v / tau for v in z])
        tckd += p[t] * math.log(p[t] / q[t]) + (1 - p[t]) * math.log((1 - p[t]) / (1 - q[t]))
        rest = [i for i in range(len(z)) if i != t]
        q_hat = _softmax([z[i] / tau for i in rest])
        nckd += sum(p[i] / (1 - p[t]) * math.log(p[i] / (1 - p[t]) / qh) for i, qh in zip(rest, q_hat, strict=True))
    return tau**2 * tckd / len(LABELS), tau**2 * nckd / len(LABELS)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_terms_equal_hand_computation(tau: float) -> None:
    tckd, nckd = dkd_terms(torch.tensor(LOGITS), torch.tensor(PROBS), torch.tensor(LABELS), tau)
    hand_t, hand_n = _hand_terms(tau)
    assert tckd.item() == pytest.approx(hand_t, rel=1e-5)
    assert nckd.item() == pytest.approx(hand_n, rel=1e-5)
    assert hand_t > 0.01 and hand_n > 0.01


def test_kd_is_tckd_plus_nckd_weighted_by_the_non_target_mass() -> None:
    """Per row, KL(p || q) = TCKD + (1 - p_t) * NCKD (the decomposition DKD starts from)."""
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    probs = torch.softmax(torch.randn(6, 5, generator=g), dim=1)
    for row in range(6):
        z, p, y = logits[row : row + 1], probs[row : row + 1], labels[row : row + 1]
        tckd, nckd = dkd_terms(z, p, y, 1.0)
        kl = (p * (p.log() - torch.log_softmax(z, dim=1))).sum()
        torch.testing.assert_close(tckd + (1 - p[0, y[0]]) * nckd, kl, atol=1e-6, rtol=1e-5)


def test_a_teacher_sure_of_the_label_adds_nothing_to_nckd() -> None:
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.5, 0.3]])
    logits, labels = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 1])
    _, both = dkd_terms(logits, probs, labels, 1.0)
    _, second = dkd_terms(logits[1:], probs[1:], labels[1:], 1.0)
    assert torch.isfinite(both) and both.item() == pytest.approx(second.item() / 2, rel=1e-6)


def _student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("fmnist_tiny", 10, 1, SIZE)


def test_loss_weights_the_terms_and_warms_them_up(tmp_path: Path) -> None:
    teachers = toy_teachers((1, 2))
    cfg = method_cfg("dkd", ce_weight=0.5, alpha=2.0, beta=3.0, temperature=2.0, warmup_epochs=2.0)
    method = DecoupledKD(cfg, _student(), teachers, 10)
    dcfg = data_cfg(train_size=24)
    data = toy_data(dcfg)
    method.prepare(data, run_cfg(dcfg, tmp_path))
    steps = 2 * len(data.train)
    method.eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 1, SIZE, SIZE, generator=g), torch.randint(0, 10, (5,), generator=g)
    with torch.no_grad():
        s = method.student(x)
        p = sum(torch.softmax(t.model(x) / 2.0, dim=1) for t in teachers) / 2
        ce = torch.nn.functional.cross_entropy(s, y)
        tckd, nckd = dkd_terms(s, p, y, 2.0)
    for step, weight in ((0, 0.0), (steps // 2, (steps // 2) / steps), (steps, 1.0), (10 * steps, 1.0)):
        out = method.training_step(Batch(x, y, torch.arange(5)), step)
        torch.testing.assert_close(out.loss.detach(), 0.5 * ce + weight * (2.0 * tckd + 3.0 * nckd))


def test_cached_soft_labels_give_the_online_loss(tmp_path: Path) -> None:
    dcfg = data_cfg(augment="pad_crop_flip", pad=1, train_size=24)
    data = toy_data(dcfg)
    teachers = toy_teachers()
    online = DecoupledKD(method_cfg("dkd"), _student(), teachers, 10)
    cached = DecoupledKD(method_cfg("dkd", soft_labels="cached"), _student(), teachers, 10)
    cached.prepare(data, run_cfg(dcfg, tmp_path))
    assert cached.soft_labels.cached is not None and cached.soft_labels.cached.spec.temperature == 4.0
    data.train.set_epoch(0)
    for batch in data.train:  # fp16 storage
        a, b = online.training_step(batch, 0).loss, cached.training_step(batch, 0).loss
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3)


def test_registered_and_composed_from_its_one_yaml() -> None:
    assert "dkd" in method_names()
    cfg = compose_config(["method=dkd"]).method
    assert (cfg.alpha, cfg.beta, cfg.temperature, cfg.ce_weight, cfg.warmup_epochs) == (1.0, 8.0, 4.0, 1.0, 0.0)
    assert isinstance(build_method(cfg, _student(), toy_teachers(), 10), DecoupledKD)
