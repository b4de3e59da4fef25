"""Data parallelism on CPU (gloo): torchrun with 2 ranks equals one process for the same global batch."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, needs_fashion_mnist, run_launch

ARGS = [
    "method=ce",
    "teachers=none",
    "logger=none",
    "student=fmnist_mlp",
    "data.train_subset=512",
    "data.test_subset=500",
    "data.batch_size=64",
    "trainer.epochs=2",
    "trainer.deterministic=true",
    "trainer.progress=off",
    "data.augment=pad_crop_flip",
    "optim.lr=0.05",
]


@pytest.mark.slow
@needs_fashion_mnist
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_ranks_match_one_process(tmp_path: Path, meal_env: dict[str, str]) -> None:
    single, multi = tmp_path / "single", tmp_path / "ddp"
    proc = run_launch([*ARGS, f"hydra.run.dir={single}"], meal_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(REPO / "launch.py"),
            *ARGS,
            f"hydra.run.dir={multi}",
        ],
        env=meal_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    results = list(multi.glob("**/result.json"))
    assert results == [multi / "result.json"], "one result.json, written by rank 0"
    one, two = (json.loads((d / "result.json").read_text()) for d in (single, multi))
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["top1"] == pytest.approx(one["top1"], abs=0.2)

    def rows(d: Path) -> list[dict]:
        return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]

    for a, b in zip(rows(single), rows(multi), strict=True):
        assert a["step"] == b["step"] and a["lr"] == pytest.approx(b["lr"])
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
    wa = torch.load(single / "checkpoints" / "last.pt", weights_only=False)["student"]
    wb = torch.load(multi / "checkpoints" / "last.pt", weights_only=False)["student"]
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@needs_fashion_mnist
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_a_last_batch_smaller_than_the_world_is_skipped(tmp_path: Path, meal_env: dict[str, str]) -> None:
    run = tmp_path / "ddp"
    args = [
        "method=ce",
        "teachers=none",
        "logger=none",
        "student=fmnist_tiny",
        "data.train_subset=513",
        "data.test_subset=500",
        "data.batch_size=64",
        "trainer.epochs=3",
        "optim.lr=0.1",
        "trainer.progress=off",
    ]
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(REPO / "launch.py"),
            *args,
            f"hydra.run.dir={run}",
        ],
        env=meal_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    *_, row = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 3 * (513 // 64), "the 513th image alone would leave one rank an empty batch: skipped"
    assert math.isfinite(row["train_loss"]), "no empty batch, no NaN"
    assert json.loads((run / "result.json").read_text())["top1"] > 30.0, "learns: chance is 10%"
