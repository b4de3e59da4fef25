"""channels_last and compile settings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from meal.app import train
from meal.config.schema import TrainerConfig
from meal.core.frozen import weight_dtype
from meal.engine.acceleration import accelerate, resolve_precision, teacher_dtype, to_channels_last, try_compile
from meal.errors import ConfigError
from meal.models import build_model
from meal.teachers import freeze
from tests.conftest import compose_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_channels_last_keeps_outputs() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        to_channels_last([model])
        after = model(x.contiguous(memory_format=torch.channels_last))
    conv = (
        model.net.conv1.weight if hasattr(model.net, "conv1") else next(p for p in model.parameters() if p.dim() == 4)
    )
    assert conv.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


class FakeInductorError(RuntimeError):
    """Stands for an error of the compiler stack (its module is what try_compile looks at)."""


FakeInductorError.__module__ = "torch._inductor.exc"


def test_compile_failure_on_the_first_call_falls_back_to_eager(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = build_model("fmnist_tiny", 10, 1, 28)
    x = torch.randn(2, 1, 28, 28)
    expected = model(x)
    calls = []

    def broken_compile(fn: object, **kwargs: object) -> object:
        def compiled(*args: object, **kw: object) -> None:
            calls.append(1)
            raise FakeInductorError("no working C++ compiler\nlong details")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    assert try_compile(model, "student") is True
    with caplog.at_level(logging.WARNING):
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model(x), expected)
    assert calls == [1], "after the failure the model runs eager"
    assert (
        "compiling student failed (FakeInductorError: no working C++ compiler); it runs eager from now on"
        in caplog.text
    )
    assert "forward" not in model.__dict__ and list(model.state_dict()) == list(expected_keys(model))


def expected_keys(model: torch.nn.Module) -> list[str]:
    """The state-dict keys of a fresh, uncompiled fmnist_tiny."""
    return list(build_model("fmnist_tiny", 10, 1, 28).state_dict())


def test_errors_of_the_model_itself_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model("fmnist_tiny", 10, 1, 28)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    try_compile(model, "student")
    with pytest.raises(RuntimeError, match="channels"):
        model(torch.zeros(2, 3, 28, 28))  # wrong channel count: the model's own error
    assert "forward" in model.__dict__, "still compiled: the failure was not the compiler's"


@pytest.mark.slow
def test_compiled_model_matches_eager_outputs_and_taps(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = build_model("fmnist_tiny", 10, 1, 28).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad(), caplog.at_level(logging.WARNING):
        eager_taps = model.forward_with_taps(x)
        assert try_compile(model, "student")
        compiled_taps = model.forward_with_taps(x)
    assert "failed" not in caplog.text and "forward" in model.__dict__, "the compiled forward ran"
    assert len(compiled_taps) == len(eager_taps) == 5
    for got, want in zip(compiled_taps, eager_taps):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert list(model.state_dict()) == expected_keys(model)


@pytest.mark.parametrize(
    ("precision", "teacher", "device", "expected"),
    [
        ("auto", "auto", CPU, torch.float32),
        ("auto", "auto", CUDA, torch.bfloat16),
        ("fp32", "auto", CUDA, torch.float32),
        ("fp16", "auto", CPU, torch.float16),
        ("fp32", "bf16", CPU, torch.bfloat16),
        ("bf16", "fp32", CUDA, torch.float32),
    ],
)
def test_teacher_precision_follows_the_student_unless_given(
    precision: str, teacher: str, device: torch.device, expected: torch.dtype
) -> None:
    cfg = OmegaConf.structured(TrainerConfig(precision=precision, teacher_precision=teacher))
    assert teacher_dtype(cfg, device) == expected


def test_unknown_precision_names_the_key() -> None:
    """The schema refuses it at composition; a config built without the schema is refused here."""
    untyped = OmegaConf.create({"precision": "auto", "teacher_precision": "fp64"})
    with pytest.raises(ConfigError, match=r"trainer\.teacher_precision: 'fp64' is not a valid choice"):
        teacher_dtype(untyped, CPU)
    with pytest.raises(ConfigError, match=r"trainer\.precision"):
        resolve_precision("half", CPU)


def test_accelerate_casts_teachers_only_and_applies_channels_last() -> None:
    cfg = OmegaConf.structured(TrainerConfig(teacher_precision="bf16", channels_last=True))
    student = build_model("fmnist_cnn", 10, 1, 28)
    teachers = [(a, freeze(build_model(a, 10, 1, 28))) for a in ("fmnist_cnn", "fmnist_tiny")]
    accelerate(cfg, student, teachers, CPU)
    assert weight_dtype(student) == torch.float32
    assert all(weight_dtype(model) == torch.bfloat16 for _, model in teachers)
    for model in (student, teachers[0][1]):
        conv = next(p for p in model.parameters() if p.dim() == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last)


def test_accelerate_leaves_teachers_in_float32_on_the_cpu_by_default() -> None:
    teacher = freeze(build_model("fmnist_cnn", 10, 1, 28))
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    accelerate(OmegaConf.structured(TrainerConfig()), build_model("fmnist_tiny", 10, 1, 28), [("t", teacher)], CPU)
    assert all(torch.equal(state[k], v) and v.dtype == state[k].dtype for k, v in teacher.state_dict().items())


@pytest.mark.slow
def test_a_run_with_bf16_teachers_learns_on_the_cpu(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "v2"
    overrides = [
        "data=synthetic",
        "data.in_channels=1",
        "data.image_size=28",
        "data.mean=[0.5]",
        "data.std=[0.25]",
        "data.train_size=512",
        "data.test_size=256",
        "data.batch_size=64",
        "logger=none",
        "trainer.progress=off",
        "trainer.device=cpu",
        "trainer.teacher_precision=bf16",
        "method=meal_v2",
        "student=fmnist_tiny",
        "teachers=fmnist_pair",
        "teachers.training.epochs=3",
        "trainer.epochs=3",
        f"paths.zoo={tmp_path / 'zoo'}",
    ]
    with caplog.at_level(logging.INFO, logger="meal"):
        result = train(compose_config(overrides, run), run)
    assert "teachers stored and run in bfloat16 under inference mode" in caplog.text
    assert min(result.teacher_top1.values()) > 90.0, "bf16 teachers keep their accuracy"
    assert result.top1 > 80.0, "the student learns from bf16 teachers without labels"
    stored = torch.load(tmp_path / "zoo" / "synthetic" / "fmnist_cnn-s0.pt", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in stored.values()), "the zoo file stays float32"
