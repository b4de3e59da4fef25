"""Thread count: `trainer.threads`, else the CPUs Slurm gave the task (SLURM_CPUS_PER_TASK)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from meal.engine.environment import configure_threads


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_slurm_cpus_per_task_sets_the_threads_when_trainer_threads_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(2)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert configure_threads(None) == 1
    assert torch.get_num_threads() == 1


def test_trainer_threads_wins_over_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert configure_threads(2) == 2
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", [None, "", "abc", "0"])
def test_without_a_usable_slurm_value_torch_keeps_its_threads(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    torch.set_num_threads(2)
    if value is None:
        monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    else:
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", value)
    assert configure_threads(None) is None
    assert torch.get_num_threads() == 2
