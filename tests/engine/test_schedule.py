"""LR schedules and optimizers."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from meal.config.schema import OptimConfig, ScheduleConfig, TrainerConfig
from meal.engine.schedule import build_optimizer, lr_multiplier, resolve_epochs
from meal.errors import ConfigError


def schedule(**kw: object) -> object:
    return OmegaConf.structured(ScheduleConfig(**kw))


def test_meal_step_boundaries_scale_with_factor() -> None:
    for a in (1.0, 1.5, 2.0):
        f = lr_multiplier(schedule(name="meal_step", factor=a), round(350 * a))
        assert f(0) == 1.0
        assert f(150 * a - 1e-6) == 1.0
        assert f(150 * a) == pytest.approx(0.1)
        assert f(250 * a - 1e-6) == pytest.approx(0.1)
        assert f(250 * a) == pytest.approx(0.01)
        assert f(350 * a - 1) == pytest.approx(0.01)


def test_meal_step_sets_run_length() -> None:
    trainer = OmegaConf.structured(TrainerConfig(epochs=None))
    assert resolve_epochs(trainer, schedule(name="meal_step", factor=1.0)) == 350
    assert resolve_epochs(trainer, schedule(name="meal_step", factor=1.4)) == 490
    with pytest.raises(ConfigError, match=r"^trainer\.epochs"):
        resolve_epochs(trainer, schedule(name="cosine"))


def test_multistep_and_cosine_values() -> None:
    f = lr_multiplier(schedule(name="multistep", milestones=[2, 5], decay=0.5), 10)
    assert [f(e) for e in (0, 1.9, 2, 4.9, 5, 9)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    c = lr_multiplier(schedule(name="cosine", warmup_epochs=2, min_lr=0.1), 10)
    assert c(1) == pytest.approx(0.5 * (0.1 + 0.9 * 1.0), rel=1e-6)
    assert c(2) == pytest.approx(1.0)
    assert c(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert c(10) == pytest.approx(0.1)


def test_optimizers_carry_their_settings() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = build_optimizer(
        params, OmegaConf.structured(OptimConfig(name="sgd", lr=0.2, nesterov=True, weight_decay=1e-4))
    )
    group = sgd.param_groups[0]
    assert isinstance(sgd, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.2, 0.9, True, 1e-4)
    adamw = build_optimizer(params, OmegaConf.structured(OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05)))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.05
    with pytest.raises(ConfigError, match=r"^optim\.lr"):
        build_optimizer(params, OmegaConf.structured(OptimConfig(lr=0.0)))
    with pytest.raises(ConfigError, match=r"^optim\.name"):  # a config built without the schema, which refuses it
        build_optimizer(params, OmegaConf.create({"name": "lion", "lr": 0.1}))


def test_a_stretched_schedule_plays_slower_over_the_longer_run() -> None:
    step = lr_multiplier(schedule(name="meal_step", factor=1.0), 3 * 350, stretch=3)
    assert [step(e) for e in (449.9, 450, 749.9, 750)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
    multi = lr_multiplier(schedule(name="multistep", milestones=[2, 5], decay=0.5), 20, stretch=2)
    assert [multi(e) for e in (3.9, 4, 9.9, 10)] == [1.0, 0.5, 0.5, 0.25]
    plain = lr_multiplier(schedule(name="cosine", warmup_epochs=1, min_lr=0.0), 10)
    slow = lr_multiplier(schedule(name="cosine", warmup_epochs=1, min_lr=0.0), 30, stretch=3)
    for e in (0.5, 1, 4, 7.5, 10):
        assert slow(3 * e) == pytest.approx(plain(e))
    assert lr_multiplier(schedule(name="cosine"), 10, stretch=1)(5) == pytest.approx(0.5)
