"""Frozen teachers in reduced precision under inference mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from meal.core.frozen import cast_frozen, teacher_logits, usable, weight_dtype
from meal.data.batch import Batch
from meal.methods import Teacher, build_method
from meal.methods.meal_v1 import MealV1MethodConfig
from meal.methods.meal_v2 import MealV2MethodConfig
from meal.models import build_model
from meal.softlabels.targets import ensemble_targets
from meal.teachers import freeze


def _bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def _frozen(arch: str, seed: int = 0, size: int = 32, channels: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return freeze(build_model(arch, 10, channels, size))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cast_halves_weights_and_keeps_batchnorm_in_float32(dtype: torch.dtype) -> None:
    model = _frozen("resnet18")

    def bn_state() -> dict[str, torch.Tensor]:
        return {
            f"{name}.{k}": v.clone()
            for name, m in model.named_modules()
            if isinstance(m, nn.BatchNorm2d)
            for k, v in m.state_dict().items()
        }

    bn_tensors = bn_state()
    before = _bytes(model)
    cast_frozen(model, dtype)
    assert weight_dtype(model) == dtype
    for module in model.modules():
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        floats = [t for t in own if t.is_floating_point()]
        expected = torch.float32 if isinstance(module, nn.BatchNorm2d) else dtype
        assert all(t.dtype == expected for t in floats), type(module).__name__
    after = bn_state()
    assert bn_tensors and all(torch.equal(after[k], v) for k, v in bn_tensors.items())
    bn_bytes = sum(_bytes(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert _bytes(model) - bn_bytes == (before - bn_bytes) // 2


def test_cast_keeps_channels_last() -> None:
    model = _frozen("resnet18").to(memory_format=torch.channels_last)
    cast_frozen(model, torch.bfloat16)
    conv = next(p for p in model.parameters() if p.dim() == 4)
    assert conv.dtype == torch.bfloat16 and conv.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_bf16_teacher_logits_are_close_to_float32_and_usable_in_autograd() -> None:
    model = _frozen("resnet18")
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(x)
    cast_frozen(model, torch.bfloat16)
    logits = teacher_logits(model, x)
    assert logits.dtype == torch.float32 and not logits.is_inference() and not logits.requires_grad
    scale = reference.abs().max()
    assert (logits - reference).abs().max() < 0.05 * scale, "bf16 keeps about 3 significant digits"
    assert not torch.equal(logits, reference), "the teacher really computed in bf16"
    student = torch.randn(8, 10, requires_grad=True)
    loss = -(logits.softmax(1) * F.log_softmax(student, 1)).sum(1).mean()  # saves the target for backward
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_usable_copies_only_inference_tensors() -> None:
    normal = torch.ones(3)
    assert usable(normal) is normal
    with torch.inference_mode():
        made = torch.ones(3)
    copied = usable(made)
    assert made.is_inference() and not copied.is_inference() and torch.equal(copied, made)


def test_ensemble_targets_under_reduced_precision_match_float32() -> None:
    teachers = [_frozen("fmnist_cnn", s, 28, 1) for s in range(2)]
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    full = ensemble_targets(teachers, x, 2.0)
    for t in teachers:
        cast_frozen(t, torch.bfloat16)
    reduced = ensemble_targets(teachers, x, 2.0)
    assert reduced.probs.dtype == reduced.logits.dtype == torch.float32
    torch.testing.assert_close(reduced.probs.sum(1), torch.ones(16))
    assert (reduced.probs - full.probs).abs().max() < 0.02
    assert not reduced.probs.is_inference() and not reduced.logits.is_inference()


def _train_steps(method: nn.Module, x: torch.Tensor, steps: int = 3) -> list[float]:
    optimizer = torch.optim.SGD(method.student.parameters(), lr=0.05)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = method.training_step(
            Batch(x, torch.zeros(x.shape[0], dtype=torch.long), torch.arange(x.shape[0])), step
        ).loss
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("kind", ["meal_v1_blockwise", "meal_v2"])
def test_methods_train_against_bf16_teachers_without_touching_them(kind: str) -> None:
    teachers = [
        Teacher(f"t{i}", cast_frozen(_frozen(a, i, 28, 1), torch.bfloat16))
        for i, a in enumerate(["fmnist_cnn", "fmnist_tiny"])
    ]
    before = [{k: v.clone() for k, v in t.model.state_dict().items()} for t in teachers]
    if kind == "meal_v2":
        cfg = OmegaConf.structured(MealV2MethodConfig())
    else:
        cfg = OmegaConf.structured(
            MealV1MethodConfig(
                out_layer=[0, 1, 2, 3, 4],
                out_dims=[196, 49, 9, 32, 10],
                gamma=[0.01, 0.01, 0.05, 0.1, 1.0],
                eta=[0.1] * 5,
            )
        )
    torch.manual_seed(0)
    method = build_method(cfg, build_model("fmnist_tiny", 10, 1, 28), teachers, 10, 0)
    method.train()
    losses = _train_steps(method, torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(3)))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.parameters())
    for t, b in zip(teachers, before):
        assert not t.model.training
        assert all(torch.equal(b[k], v) for k, v in t.model.state_dict().items())
        assert weight_dtype(t.model) == torch.bfloat16
