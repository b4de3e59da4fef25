"""The benchmark on a GPU: both regimes, bf16 teachers, compiled student, profiler summary (skipped without a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TINY_CIFAR = [
    "method=meal_v2",
    "student=resnet18",
    "teachers=none",
    "teachers.members=[{arch:resnet18},{arch:vgg19_bn}]",
    "data=synthetic",
    "data.in_channels=3",
    "data.image_size=32",
    "data.train_size=256",
    "data.test_size=64",
    "data.batch_size=128",
    "data.mean=[0.5,0.5,0.5]",
    "data.std=[0.25,0.25,0.25]",
    "data.augment=pad_crop_flip",
    "data.pad=2",
    "trainer.progress=off",
]


def test_bench_regimes_on_the_gpu(tmp_path: Path, meal_env: dict[str, str]) -> None:
    args = [
        "--json",
        "--regimes",
        "fp32_eager,fast",
        "--steps",
        "10",
        "--warmup",
        "5",
        "--random-teachers",
        "--profile",
        str(tmp_path / "profile"),
        *TINY_CIFAR,
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "meal.bench", *args], env=meal_env, cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["device"].startswith("cuda")
    eager, fast = result["regimes"]["fp32_eager"], result["regimes"]["fast"]
    assert eager["autocast"] is None and eager["teacher_dtype"] == "float32" and not eager["student_compiled"]
    assert fast["autocast"] == "bfloat16" and fast["teacher_dtype"] == "bfloat16"
    assert fast["student_compiled"] and fast["student_channels_last"]
    for regime in (eager, fast):
        assert regime["peak_memory_kind"] == "torch.cuda.max_memory_allocated"
        for mode in result["modes"]:
            assert regime[f"{mode}_img_per_s"] > 0 and regime[f"{mode}_peak_memory_mb"] > 0
            assert 0 < regime["profile"][mode]["device_busy"] <= 1.5
            assert (
                "Self CUDA"
                in (tmp_path / "profile" / ("fp32_eager" if regime is eager else "fast") / f"{mode}.txt").read_text()
            )
    assert set(result["speedup"]) == {"ce", "online", "cached"}
    assert fast["online_peak_memory_mb"] < eager["online_peak_memory_mb"], "bf16 teachers and activations"
