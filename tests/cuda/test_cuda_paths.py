"""CUDA paths: bf16 training, bf16 teachers under inference mode, GPU-resident augmentation, compile.

Skipped without a GPU (CI has none); run them on a GPU machine with ``python -m pytest tests/cuda``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from meal.app import train
from meal.config.schema import TrainerConfig
from meal.core.frozen import weight_dtype
from meal.data.augment import apply_params, reference_transform, sample_params
from meal.data.batch import Batch
from meal.engine.acceleration import accelerate
from meal.methods import Teacher, build_method
from meal.models import build_model
from meal.teachers import freeze
from tests.conftest import compose_config

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SYNTHETIC = [
    "data=synthetic",
    "data.in_channels=1",
    "data.image_size=28",
    "data.mean=[0.5]",
    "data.std=[0.25]",
    "data.train_size=2048",
    "data.test_size=512",
    "data.batch_size=128",
    "logger=none",
    "trainer.progress=off",
    "trainer.device=cuda",
    "trainer.precision=bf16",
]


def _losses(run: Path) -> tuple[float, float]:
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    return rows[0]["train_loss"], rows[-1]["train_loss"]


def test_bf16_training_makes_progress(tmp_path: Path) -> None:
    run = tmp_path / "ce"
    result = train(compose_config([*SYNTHETIC, "method=ce", "teachers=none", "trainer.epochs=4"], run), run)
    first, last = _losses(run)
    assert last < 0.8 * first
    assert result.top1 > 50.0, "synthetic classes are learnable well above chance (10%)"


def test_compiled_channels_last_training_makes_progress(tmp_path: Path) -> None:
    run = tmp_path / "compiled"
    cfg = compose_config(
        [
            *SYNTHETIC,
            "method=ce",
            "teachers=none",
            "trainer.epochs=4",
            "student.arch=resnet18",
            "data.in_channels=3",
            "data.image_size=32",
            "data.mean=[0.5,0.5,0.5]",
            "data.std=[0.25,0.25,0.25]",
            "trainer.compile=true",
            "trainer.channels_last=true",
        ],
        run,
    )
    result = train(cfg, run)
    first, last = _losses(run)
    assert last < 0.8 * first and result.top1 > 50.0


def test_teachers_are_halved_frozen_and_in_eval_mode_while_the_student_trains() -> None:
    cfg = compose_config([*SYNTHETIC, "method=meal_v2"])
    device = torch.device("cuda")
    teachers = [Teacher(f"t{i}", freeze(build_model("fmnist_cnn_wide", 10, 1, 28).to(device))) for i in range(2)]
    torch.cuda.synchronize()
    before_bytes = torch.cuda.memory_allocated(device)
    student = build_model("fmnist_tiny", 10, 1, 28).to(device)
    accelerate(
        OmegaConf.structured(TrainerConfig(precision="bf16")), student, [(t.name, t.model) for t in teachers], device
    )
    teacher_bytes = sum(p.numel() * 4 for t in teachers for p in t.model.parameters())
    assert torch.cuda.memory_allocated(device) < before_bytes - 0.4 * teacher_bytes, "teacher weights halved"
    before = [{k: v.clone() for k, v in t.model.state_dict().items()} for t in teachers]
    method = build_method(cfg.method, student, teachers, 10, 0).to(device)
    method.train()
    optimizer = torch.optim.SGD(method.student.parameters(), lr=0.1)
    x = torch.randn(64, 1, 28, 28, device=device)
    batch = Batch(x, torch.zeros(64, dtype=torch.long, device=device), torch.arange(64))
    for step in range(3):
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = method.training_step(batch, step).loss
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    for t, b in zip(teachers, before):
        assert not t.model.training and weight_dtype(t.model) == torch.bfloat16
        assert all(torch.equal(b[k], v) for k, v in t.model.state_dict().items())


def test_meal_v2_run_with_bf16_teachers_learns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "v2"
    overrides = [
        *SYNTHETIC,
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
    first, last = _losses(run)
    assert last < first
    assert min(result.teacher_top1.values()) > 50.0, "bf16 teachers keep their accuracy"
    assert result.top1 > 50.0, "the student learns from bf16 teachers without labels"


def test_gpu_augmentation_matches_cpu_reference() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    params = sample_params(64, "pad_crop_flip", 4, g)
    on_gpu = apply_params(images.cuda(), params.cuda(), 4).cpu()
    for i in range(64):
        dx, dy, flip = params[i].tolist()
        assert torch.equal(on_gpu[i], reference_transform(images[i], dx, dy, bool(flip), 4))
