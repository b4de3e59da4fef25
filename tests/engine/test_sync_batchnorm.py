"""Synchronised BatchNorm (`trainer.sync_batchnorm`): the conversion keeps weights, keys and taps, and the
CPU layer's statistics, gradients and running averages are BatchNorm's (checked in float64, with the
all-reduce of one rank standing in for the group's; tests/engine/test_ddp.py runs it on two ranks)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import meal.engine.sync_batchnorm as sync_bn
from meal.engine.sync_batchnorm import CPUSyncBatchNorm, convert_sync_batchnorm
from meal.models import build_model


def _student(taps: list[str] | None = None) -> nn.Module:
    torch.manual_seed(0)
    return build_model("fmnist_tiny", 10, 1, 12, taps=taps)


def test_conversion_keeps_weights_keys_and_taps() -> None:
    model = _student(taps=["block1.1", "block2"])  # a tap on a BatchNorm layer itself
    x = torch.randn(4, 1, 12, 12)
    model.eval()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = [t.clone() for t in model.forward_with_taps(x)]
    _, replaced = convert_sync_batchnorm(model, "cpu")
    assert replaced == 3
    assert sum(isinstance(m, CPUSyncBatchNorm) for m in model.modules()) == 3
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    after_state = model.state_dict()
    assert after_state.keys() == before_state.keys()
    for key, value in before_state.items():
        torch.testing.assert_close(after_state[key], value, rtol=0, atol=0)
    after = model.forward_with_taps(x)
    assert len(after) == 3, "the BatchNorm tap still records"
    for a, b in zip(after, before, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert convert_sync_batchnorm(model, "cpu")[1] == 0, "converting twice replaces nothing"


def test_cuda_conversion_gives_torch_sync_batchnorm() -> None:
    model = _student()
    convert_sync_batchnorm(model, "cuda")
    assert sum(type(m) is nn.SyncBatchNorm for m in model.modules()) == 3


def test_without_a_process_group_the_layer_is_plain_batchnorm() -> None:
    x = torch.randn(8, 3, 5, 5)
    plain = nn.BatchNorm2d(3)
    synced = CPUSyncBatchNorm(3)
    for layer in (plain, synced):
        layer.train()
    torch.testing.assert_close(synced(x), plain(x), rtol=0, atol=0)
    torch.testing.assert_close(synced.running_var, plain.running_var, rtol=0, atol=0)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(16, 4, 6, 6), (16, 4)])
def test_the_synchronised_formula_is_batchnorm(
    shape: tuple[int, ...], momentum: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rank's all-reduce is the identity: the layer's own arithmetic must then be BatchNorm's."""
    monkeypatch.setattr(sync_bn, "_several_ranks", lambda: True)
    monkeypatch.setattr(sync_bn.dist_fn, "all_reduce", lambda t, group=None: t)
    torch.manual_seed(1)
    channels = shape[1]
    reference = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(channels, momentum=momentum).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    synced = copy.deepcopy(reference)
    convert = convert_sync_batchnorm(nn.Sequential(synced), "cpu")[0]
    layer = convert[0]
    assert isinstance(layer, CPUSyncBatchNorm)
    for step in range(3):
        x = (torch.randn(*shape, dtype=torch.float64) * 2 + step).requires_grad_()
        upstream = torch.randn(*shape, dtype=torch.float64)
        outputs, grads = [], []
        for module in (reference, layer):
            module.zero_grad()
            xi = x.detach().clone().requires_grad_()
            y = module(xi)
            (y * upstream).sum().backward()
            outputs.append(y.detach())
            grads.append((xi.grad, module.weight.grad.clone(), module.bias.grad.clone()))
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-10, atol=1e-10)
        for mine, theirs in zip(grads[1], grads[0], strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(layer.running_mean, reference.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.running_var, reference.running_var, rtol=1e-12, atol=1e-12)
    assert int(layer.num_batches_tracked) == int(reference.num_batches_tracked) == 3
    layer.eval()
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(
        layer(x),
        F.batch_norm(
            x,
            reference.running_mean,
            reference.running_var,
            reference.weight,
            reference.bias,
            False,
            0.0,
            reference.eps,
        ),
    )
