"""A teacher set's recipe: zoo file names, sidecar records, refusal of a teacher trained otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from meal.app import train
from meal.errors import ConfigError
from meal.teachers import recipe_mismatch, recorded_recipe, zoo_entry
from tests.conftest import compose_config

TINY = [
    "data=synthetic",
    "data.train_size=96",
    "data.test_size=32",
    "data.batch_size=32",
    "logger=none",
    "trainer.progress=off",
    "trainer.threads=1",
]


def _kd_cfg(tmp_path: Path, run: str, *extra: str) -> DictConfig:
    return compose_config(
        [
            *TINY,
            "method=kd",
            "teachers=fmnist_single",
            "trainer.epochs=1",
            f"paths.zoo={tmp_path / 'zoo'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            *extra,
        ],
        tmp_path / run,
    )


def test_zoo_entry_names_the_recipe() -> None:
    assert zoo_entry(Path("/z"), "fashion_mnist", "fmnist_resnet", 0) == Path("/z/fashion_mnist/fmnist_resnet-s0.pt")
    assert zoo_entry(Path("/z"), "fashion_mnist", "fmnist_resnet", 3, "full60k") == Path(
        "/z/fashion_mnist/fmnist_resnet-s3-full60k.pt"
    )


def test_recorded_recipe_reads_new_and_old_sidecars() -> None:
    new = {
        "recipe": {
            "name": "full60k",
            "epochs": 10,
            "optim": "sgd",
            "lr": 0.05,
            "schedule": "cosine",
            "train_subset": None,
        }
    }
    old = {
        "config": {
            "trainer": {"epochs": 10},
            "optim": {"name": "sgd", "lr": 0.05},
            "schedule": {"name": "cosine"},
            "data": {"train_subset": 10000},
        }
    }
    assert recorded_recipe(new) == new["recipe"]
    assert recorded_recipe(old) == {
        "epochs": 10,
        "optim": "sgd",
        "lr": 0.05,
        "schedule": "cosine",
        "train_subset": 10000,
    }
    assert recorded_recipe({"arch": "x"}) is None
    asked = compose_config(["teachers=fmnist_strong"]).teachers.training
    assert recipe_mismatch(new["recipe"], asked) == []
    assert recipe_mismatch(recorded_recipe(old), asked) == ["train_subset=10000 (the set asks for None)"]


@pytest.mark.slow
def test_a_teacher_trained_with_another_recipe_is_refused(tmp_path: Path) -> None:
    """The set trains its missing teacher, records the recipe, reuses it, and refuses it under another recipe."""
    cfg = _kd_cfg(tmp_path, "first", "teachers.training.epochs=1", "teachers.training.recipe=r1")
    result = train(cfg, tmp_path / "first")
    entry = tmp_path / "zoo" / "synthetic" / "fmnist_cnn-s0-r1.pt"
    sidecar = json.loads(entry.with_suffix(".json").read_text())
    assert sidecar["recipe"] == {
        "name": "r1",
        "epochs": 1,
        "optim": "sgd",
        "lr": 0.05,
        "schedule": "cosine",
        "train_subset": 10000,  # the set's train_subset follows the run's data.train_subset (the quickstart's)
        "batch_size": 32,
        "weight_decay": 5e-4,
        "augment": "none",
    }
    assert result.teachers == ["fmnist_cnn-s0"] and result.status == "completed"
    before = entry.read_bytes()

    again = train(
        _kd_cfg(tmp_path, "second", "teachers.training.epochs=1", "teachers.training.recipe=r1"), tmp_path / "second"
    )
    assert again.teacher_top1 == result.teacher_top1  # the same teacher file, not retrained

    with pytest.raises(ConfigError) as refused:
        train(
            _kd_cfg(tmp_path, "third", "teachers.training.epochs=2", "teachers.training.recipe=r1"), tmp_path / "third"
        )
    message = str(refused.value)
    assert message.startswith("teachers.members[0]: zoo teacher ") and str(entry) in message
    assert "epochs=1 (the set asks for 2)" in message and "teachers.training.recipe" in message
    assert entry.read_bytes() == before
    assert not (tmp_path / "third" / "result.json").exists()


@pytest.mark.slow
def test_an_export_is_kept_on_rerun_and_never_overwritten_by_another_run(tmp_path: Path) -> None:
    extra = [
        "method=ce",
        "teachers=none",
        "trainer.epochs=1",
        "trainer.export_to_zoo=true",
        "trainer.zoo_recipe=student",
        f"paths.zoo={tmp_path / 'zoo'}",
        "data.val_split=0.25",
    ]
    cfg = compose_config([*TINY, *extra], tmp_path / "run")
    first = train(cfg, tmp_path / "run")
    entry = tmp_path / "zoo" / "synthetic" / "fmnist_tiny-s0-student.pt"
    exported = entry.read_bytes()
    assert json.loads(entry.with_suffix(".json").read_text())["run_dir"] == str(tmp_path / "run")

    rerun = train(compose_config([*TINY, *extra], tmp_path / "run"), tmp_path / "run")  # a finished sweep job
    assert rerun.top1 == first.top1 and entry.read_bytes() == exported

    other = compose_config([*TINY, *extra], tmp_path / "other")
    with pytest.raises(ConfigError, match=r"trainer\.export_to_zoo: zoo entry .* exists and is never overwritten"):
        train(other, tmp_path / "other")
    assert entry.read_bytes() == exported


@pytest.mark.slow
def test_result_holds_the_final_validation_and_test_figures(tmp_path: Path) -> None:
    cfg = compose_config(
        [*TINY, "method=ce", "teachers=none", "trainer.epochs=2", "data.val_split=0.25"], tmp_path / "run"
    )
    with open_dict(cfg):
        cfg.data.train_size = 128
    result = train(cfg, tmp_path / "run")
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert (result.top1, result.val_top1, result.val_top5) == (
        last["top1"],
        last["val_top1"],
        last["val_top5"],
    )
    assert 0.0 <= result.val_top1 <= result.val_top5 <= 100.0
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["val_top1"] == result.val_top1

    no_val = train(
        compose_config([*TINY, "method=ce", "teachers=none", "trainer.epochs=1"], tmp_path / "plain"),
        tmp_path / "plain",
    )
    assert no_val.val_top1 is None and no_val.top1 is not None
