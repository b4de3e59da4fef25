"""Checks before work: a method option that does not fit the student's or the teachers' structure is refused
before any data is loaded, any teacher is trained or any file is written (meal.preflight)."""

from __future__ import annotations

from pathlib import Path

import pytest

import meal.app
import meal.pieces
from meal.app import train
from meal.errors import ConfigError
from meal.preflight import check_before_work
from tests.conftest import compose_config, meal_environ, run_launch

# MEAL v1 on the quickstart teachers with an empty zoo: every teacher would be trained first
OUT_OF_RANGE = [
    "method=meal_v1",
    "method.out_layer=[99]",
    "method.out_dims=[10]",
    "method.gamma=[1.0]",
    "method.eta=[0.1]",
    "teachers=fmnist_trio",
    "teachers.train_missing=true",
    "logger=none",
]


def _nothing_may_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the config was checked")

    monkeypatch.setattr(meal.pieces, "build_data", refuse)
    monkeypatch.setattr(meal.pieces, "load_teachers", refuse)
    monkeypatch.setattr(meal.app, "train_missing_teacher", refuse)


def test_an_out_of_range_out_layer_is_refused_before_data_teachers_or_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEAL_ZOO", str(tmp_path / "zoo"))
    run = tmp_path / "run"
    cfg = compose_config(OUT_OF_RANGE, run)
    _nothing_may_load(monkeypatch)
    with pytest.raises(ConfigError) as info:
        train(cfg, run)
    assert info.value.key == "method.out_layer[0]"
    assert "index 99 is out of range: fmnist_tiny has 5 block outputs (4 taps + logits)" in str(info.value)
    assert not (tmp_path / "zoo").exists()
    assert not run.exists() or [p.name for p in run.iterdir()] == [".lock"]


def test_a_teacher_with_another_block_count_is_refused_before_work(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose_config(["method=meal_v1", "teachers=fmnist_pair", "teachers.members.0.taps=[block1]"])
    with pytest.raises(
        ConfigError,
        match=r"^method\.out_layer: teacher 'fmnist_cnn-s0' has 2 block outputs "
        r"and the student 5",
    ):
        check_before_work(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["meal_v1", "meal_v2", "kd"])
def test_a_distillation_method_without_teachers_is_refused_before_work(method: str) -> None:
    cfg = compose_config([f"method={method}", "teachers=none"])
    with pytest.raises(
        ConfigError,
        match=rf"^teachers: method '{method}' needs teachers but the set 'none' is empty \(choose a teacher set",
    ):
        check_before_work(cfg)


@pytest.mark.slow
def test_the_default_configs_pass() -> None:
    for method in ("meal_v1", "meal_v1_blockwise", "meal_v2", "kd", "ce"):
        overrides = [f"method={method}"]
        if method == "meal_v1_blockwise":  # CIFAR-size out_dims, on the quickstart student's blocks
            overrides.append("method.out_dims=[196,49,9,32,10]")
        check_before_work(compose_config(overrides))


@pytest.mark.slow
def test_launch_refuses_in_one_line_and_leaves_the_zoo_empty(tmp_path: Path) -> None:
    env = meal_environ(tmp_path)
    result = run_launch([*OUT_OF_RANGE, f"hydra.run.dir={tmp_path / 'run'}"], env, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error:" in line]
    assert len(errors) == 1 and "method.out_layer[0]: index 99 is out of range" in errors[0]
    assert not (tmp_path / "zoo").exists() or not any((tmp_path / "zoo").rglob("*"))
