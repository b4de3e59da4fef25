"""CUDA paths: bf16 training, frozen teachers under autocast, GPU-resident augmentation (skipped without a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from meal.app import train
from meal.data.augment import apply_params, reference_transform, sample_params
from meal.data.batch import Batch
from meal.methods import Teacher, build_method
from meal.models import build_model
from meal.teachers import freeze
from tests.conftest import compose_config

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SYNTHETIC = ["data=synthetic", "data.in_channels=1", "data.image_size=28", "data.mean=[0.5]", "data.std=[0.25]",
             "data.train_size=2048", "data.test_size=512", "data.batch_size=128", "logger=none",
             "trainer.progress=off", "trainer.device=cuda", "trainer.precision=bf16"]


def test_bf16_training_makes_progress(tmp_path: Path) -> None:
    run = tmp_path / "ce"
    result = train(compose_config([*SYNTHETIC, "method=ce", "teachers=none", "trainer.epochs=4"], run), run)
    rows = (run / "metrics.jsonl").read_text().splitlines()
    first, last = (json.loads(r) for r in (rows[0], rows[-1]))
    assert last["train_loss"] < 0.8 * first["train_loss"]
    assert result["top1"] > 50.0, "synthetic classes are learnable well above chance (10%)"


def test_teachers_stay_frozen_in_eval_mode_under_autocast(tmp_path: Path) -> None:
    cfg = compose_config([*SYNTHETIC, "method=meal_v2"], tmp_path / "v2")
    device = torch.device("cuda")
    teachers = [Teacher(f"t{i}", freeze(build_model("fmnist_cnn", 10, 1, 28).to(device))) for i in range(2)]
    before = [{k: v.clone() for k, v in t.model.state_dict().items()} for t in teachers]
    method = build_method(cfg.method, build_model("fmnist_tiny", 10, 1, 28), teachers, 10, 0).to(device)
    method.train()
    optimizer = torch.optim.SGD(method.student.parameters(), lr=0.1)
    x = torch.randn(64, 1, 28, 28, device=device)
    batch = Batch(x, torch.zeros(64, dtype=torch.long, device=device), torch.arange(64))
    for _ in range(3):
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = method.training_step(batch, 0).loss
        loss.backward()
        optimizer.step()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert teachers[0].model(x).dtype == torch.bfloat16
    for t, b in zip(teachers, before):
        assert not t.model.training
        assert all(torch.equal(b[k], v) for k, v in t.model.state_dict().items())


def test_gpu_augmentation_matches_cpu_reference() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    params = sample_params(64, "pad_crop_flip", 4, g)
    on_gpu = apply_params(images.cuda(), params.cuda(), 4).cpu()
    for i in range(64):
        dx, dy, flip = params[i].tolist()
        assert torch.equal(on_gpu[i], reference_transform(images[i], dx, dy, bool(flip), 4))
