"""Teacher selection: uniform, seeded, resumable."""

from __future__ import annotations

import io

import pytest
import torch

from meal.errors import CheckpointError, ConfigError
from meal.methods.components.teacher_selection import TeacherSelector

# 0.999 quantiles of the chi-square distribution
CHI2_999 = {2: 13.816, 4: 18.467}


@pytest.mark.parametrize("n_teachers", [3, 5])
def test_random_is_uniform(n_teachers: int) -> None:
    selector = TeacherSelector(n_teachers, "random", seed=1234)
    draws = 6000
    counts = [0] * n_teachers
    for _ in range(draws):
        chosen = selector.select()
        assert len(chosen) == 1
        counts[chosen[0]] += 1
    expected = draws / n_teachers
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < CHI2_999[n_teachers - 1], counts
    assert selector.draws == draws


def test_same_seed_same_sequence_independent_of_global_rng() -> None:
    a = TeacherSelector(5, seed=42)
    torch.manual_seed(0)
    seq_a = [a()[0] for _ in range(200)]
    b = TeacherSelector(5, seed=42)
    torch.manual_seed(999)
    torch.rand(10)
    seq_b = [b()[0] for _ in range(200)]
    assert seq_a == seq_b
    c = TeacherSelector(5, seed=43)
    assert [c()[0] for _ in range(200)] != seq_a


def test_state_dict_round_trip_continues_sequence() -> None:
    run = TeacherSelector(4, seed=7)
    for _ in range(100):
        run.select()
    buffer = io.BytesIO()
    torch.save(run.state_dict(), buffer)
    continued = [run.select()[0] for _ in range(50)]

    buffer.seek(0)
    resumed = TeacherSelector(4, seed=0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.draws == 100
    assert resumed.seed == 7
    assert [resumed.select()[0] for _ in range(50)] == continued


def test_mean_returns_all() -> None:
    selector = TeacherSelector(3, "mean")
    assert selector.select() == [0, 1, 2]
    assert selector() == [0, 1, 2]


def test_errors() -> None:
    with pytest.raises(ConfigError):
        TeacherSelector(0)
    with pytest.raises(ConfigError):
        TeacherSelector(3, "vote")
    state = TeacherSelector(3).state_dict()
    with pytest.raises(CheckpointError):
        TeacherSelector(4).load_state_dict(state)
    with pytest.raises(CheckpointError):
        TeacherSelector(3, "mean").load_state_dict(state)
    del state["generator_state"]
    with pytest.raises(CheckpointError):
        TeacherSelector(3).load_state_dict(state)
