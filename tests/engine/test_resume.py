"""Stop-and-resume gives exactly the run an uninterrupted run gives; damaged or foreign state is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from meal.app import train
from meal.errors import CheckpointError, MealError
from tests.conftest import compose_config, needs_fashion_mnist

# every test trains in-process runs for a few epochs and compares or restarts them
pytestmark = pytest.mark.slow

TINY = [
    "method=ce",
    "teachers=none",
    "logger=none",
    "data.train_subset=600",
    "data.test_subset=500",
    "data.batch_size=100",
    "trainer.epochs=3",
    "trainer.deterministic=true",
    "optim.lr=0.05",
    "data.augment=pad_crop_flip",
    "trainer.progress=off",
]


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("img_per_s")
    return rows


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["student"]


@needs_fashion_mnist
@pytest.mark.parametrize("stop_at_step", [6, 9], ids=["after-epoch-1", "inside-epoch-2"])
def test_stopped_and_resumed_run_equals_uninterrupted(tmp_path: Path, stop_at_step: int) -> None:
    whole = tmp_path / "whole"
    reference = train(compose_config(TINY, whole), whole)
    assert reference.status == "completed" and reference.epochs == 3

    parts = tmp_path / "parts"
    first = train(compose_config([*TINY, f"trainer.max_steps={stop_at_step}"], parts), parts)
    assert first.status == "stopped" and first.steps == stop_at_step
    resumed = train(compose_config(TINY, parts), parts)

    assert resumed.status == "completed"
    for key in ("top1", "top5", "best_top1", "steps", "epochs"):
        assert getattr(resumed, key) == getattr(reference, key), key
    assert _metrics(parts) == _metrics(whole)
    a, b = _weights(parts), _weights(whole)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "weights differ after resume"


@needs_fashion_mnist
def test_truncated_last_checkpoint_is_reported_not_used(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(compose_config([*TINY, "trainer.max_steps=6"], run), run)
    last = run / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt: checkpoint is corrupt or truncated"):
        train(compose_config(TINY, run), run)
    assert last.read_bytes() == data[: len(data) // 2], "the damaged file is left for inspection, not replaced"


@needs_fashion_mnist
def test_restart_with_another_config_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(compose_config([*TINY, "trainer.max_steps=3"], run), run)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(MealError, match=r"different config: optim\.lr \(was 0\.05, now 0\.1\)"):
        train(compose_config([*TINY, "optim.lr=0.1"], run), run)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
