"""A step's scalars are read in one go after the backward pass, with the loss's finiteness."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from meal.engine.trainer import Trainer

CPU_TRAINER = SimpleNamespace(device=torch.device("cpu"), world_size=1)


def test_tensor_and_float_logs_come_back_as_floats_in_order() -> None:
    loss = torch.tensor(1.25, requires_grad=True) * 2
    logs = {"kd_loss": torch.tensor(0.5), "d_loss": 0.75, "sim_block0": torch.tensor([3.0])[0]}
    values, finite = Trainer._read_logs(CPU_TRAINER, loss, logs)
    assert finite is True
    assert list(values) == ["loss", "kd_loss", "d_loss", "sim_block0"]
    assert values == {"loss": 2.5, "kd_loss": 0.5, "d_loss": 0.75, "sim_block0": 3.0}
    assert all(type(v) is float for v in values.values())


def test_only_the_loss_decides_whether_the_step_is_taken() -> None:
    values, finite = Trainer._read_logs(CPU_TRAINER, torch.tensor(float("nan")), {"ce": torch.tensor(1.0)})
    assert finite is False and math.isnan(values["loss"]) and values["ce"] == 1.0
    values, finite = Trainer._read_logs(CPU_TRAINER, torch.tensor(float("-inf")), {})
    assert finite is False and values["loss"] == float("-inf")
    values, finite = Trainer._read_logs(CPU_TRAINER, torch.tensor(0.3), {"d_loss": torch.tensor(float("inf"))})
    assert finite is True and values["d_loss"] == float("inf")
