"""Hinton KD against a hand computation, and the same loss from cached soft labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from meal.data import Batch
from meal.errors import ConfigError
from meal.methods import build_method
from meal.methods.kd import KnowledgeDistillation
from meal.models import build_model
from tests.conftest import compose_config
from tests.softlabels.toy import SIZE, data_cfg, method_cfg, run_cfg, toy_data, toy_teachers


def student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("fmnist_tiny", 10, 1, SIZE)


@pytest.mark.parametrize(("alpha", "tau", "n_teachers"), [(0.9, 4.0, 2), (0.5, 1.0, 1), (0.0, 4.0, 2), (1.0, 2.0, 3)])
def test_loss_equals_hand_computation(alpha: float, tau: float, n_teachers: int) -> None:
    teachers = toy_teachers(tuple(range(1, n_teachers + 1)))
    method = KnowledgeDistillation(method_cfg("kd", alpha=alpha, temperature=tau), student(), teachers, 10)
    method.eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 1, SIZE, SIZE, generator=g), torch.randint(0, 10, (5,), generator=g)
    out = method.training_step(Batch(x, y, torch.arange(5)), 0)
    with torch.no_grad():
        s = method.student(x)
        ce = -(s - torch.log(torch.exp(s).sum(1, keepdim=True)))[torch.arange(5), y].mean()
        probs = [torch.exp(t.model(x) / tau) / torch.exp(t.model(x) / tau).sum(1, keepdim=True) for t in teachers]
        p = sum(probs) / n_teachers
        log_q = s / tau - torch.log(torch.exp(s / tau).sum(1, keepdim=True))
        kl = (p * (torch.log(p) - log_q)).sum(1).mean()
        expected = (1 - alpha) * ce + alpha * tau**2 * kl
    torch.testing.assert_close(out.loss.detach(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logs["ce"], ce, atol=1e-5, rtol=1e-5)


def test_defaults_and_checks() -> None:
    cfg = compose_config(["method=kd"]).method
    assert (cfg.alpha, cfg.temperature, cfg.soft_labels) == (0.9, 4.0, "online")
    assert isinstance(build_method(cfg, student(), toy_teachers(), 10), KnowledgeDistillation)
    with pytest.raises(ConfigError, match="teacher"):
        KnowledgeDistillation(method_cfg("kd"), student(), [], 10)


def test_cached_soft_labels_give_the_online_loss(tmp_path: Path) -> None:
    dcfg = data_cfg(augment="pad_crop_flip", pad=1, train_size=24)
    data = toy_data(dcfg)
    teachers = toy_teachers()
    online = KnowledgeDistillation(method_cfg("kd"), student(), teachers, 10)
    cached = KnowledgeDistillation(method_cfg("kd", soft_labels="cached"), student(), teachers, 10)
    cached.prepare(data, run_cfg(dcfg, tmp_path))
    assert cached.soft_labels.cached is not None and cached.soft_labels.cached.spec.temperature == 4.0
    for epoch in range(2):
        data.train.set_epoch(epoch)
        for batch in data.train:  # fp16 storage
            a, b = online.training_step(batch, 0).loss, cached.training_step(batch, 0).loss
            torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3)
