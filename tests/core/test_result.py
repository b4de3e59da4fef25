"""The typed result.json: every field survives a write and a read, archived and older files read back, unknown
keys are kept, and a malformed file is refused with an error naming it."""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import fields
from pathlib import Path

import pytest

from meal.core.result import COMPLETED, RESULT_FILE, STOPPED, Result
from meal.errors import MealError, ResultError
from meal.rundir import write_result
from tests.conftest import REPO

ARCHIVE = REPO / "experiments" / "results" / "runs"
#: a distillation run with every key of today's result.json
ARCHIVED = ARCHIVE / "ablation_adversarial" / "0" / "result.json"
#: a run written before best_epoch, best_metric, objective and the calibration figures existed
ARCHIVED_OLD = ARCHIVE / "finetune_tiny" / "0" / "result.json"

#: the keys result.json has held since the calibration figures were added: the contract with its readers
KEYS = [
    "method",
    "student",
    "teachers",
    "teacher_set",
    "dataset",
    "seed",
    "epochs",
    "steps",
    "top1",
    "top5",
    "val_top1",
    "val_top5",
    "best_top1",
    "best_val_top1",
    "best_epoch",
    "best_metric",
    "objective",
    "teacher_top1",
    "ensemble_top1",
    "params",
    "img_per_s",
    "wall_s",
    "train_s",
    "skipped_steps",
    "wandb_id",
    "experiment",
    "status",
    "ece",
    "nll",
    "ensemble_agreement",
    "teacher_agreement",
    "world_size",
]
NEWER_KEYS = ["best_epoch", "best_metric", "best_val_top1", "objective", "ece", "nll", "ensemble_agreement"]


def _full() -> Result:
    """A Result with a value other than its default in every field."""
    return Result(
        method="meal_v2",
        student="resnet20",
        teachers=["resnet56-s0", "vgg19-s1"],
        teacher_set="cifar_pair",
        dataset="cifar10",
        seed=3,
        epochs=5,
        steps=1955,
        top1=91.5,
        top5=99.75,
        val_top1=92.0,
        val_top5=99.5,
        best_top1=91.25,
        best_val_top1=92.5,
        best_epoch=4,
        best_metric="val_top1",
        objective="val_top1",
        teacher_top1={"resnet56-s0": 93.5, "vgg19-s1": 94.0},
        ensemble_top1=95.0,
        params=272474,
        img_per_s=1500.5,
        wall_s=300.25,
        train_s=250.5,
        skipped_steps=1,
        wandb_id="abc123",
        experiment="suite",
        status=COMPLETED,
        ece=1.5,
        nll=0.25,
        ensemble_agreement=96.5,
        teacher_agreement={"resnet56-s0": 94.5, "vgg19-s1": 95.5},
        world_size=2,
        extra={"future_figure": [1, 2]},
    )


def test_the_fields_are_the_keys_of_result_json() -> None:
    assert [f.name for f in fields(Result) if f.name != "extra"] == KEYS
    assert list(Result().to_json_dict()) == KEYS
    assert RESULT_FILE == "result.json" and (COMPLETED, STOPPED) == ("completed", "stopped")


def test_every_field_round_trips_through_a_file(tmp_path: Path) -> None:
    result = _full()
    assert all(getattr(result, f.name) != f.default for f in fields(Result) if f.name != "extra")
    path = write_result(tmp_path, result)
    assert path == tmp_path / RESULT_FILE
    written = json.loads(path.read_text())
    assert written == result.to_json_dict() and set(written) == {*KEYS, "future_figure"}
    assert Result.read(path) == result


def test_to_json_dict_is_a_copy() -> None:
    result = _full()
    result.to_json_dict()["teacher_top1"]["resnet56-s0"] = 0.0
    assert result.teacher_top1["resnet56-s0"] == 93.5


@pytest.mark.parametrize("path", [ARCHIVED, ARCHIVED_OLD], ids=["current", "older"])
def test_an_archived_result_reads_into_fields_equal_to_its_json(path: Path) -> None:
    data = json.loads(path.read_text())
    result = Result.read(path)
    for key, value in data.items():
        assert getattr(result, key) == value, key
    assert result.extra == {} and result.completed


def test_every_archived_result_reads_back_unchanged() -> None:
    paths = sorted(ARCHIVE.rglob(RESULT_FILE))
    assert len(paths) > 100
    for path in paths:
        data = json.loads(path.read_text())
        written = Result.read(path).to_json_dict()
        assert {key: written[key] for key in data} == data, path


def test_an_older_file_reads_its_missing_keys_as_none() -> None:
    data = json.loads(ARCHIVED_OLD.read_text())
    assert not set(NEWER_KEYS) & set(data) and "teacher_agreement" not in data
    result = Result.read(ARCHIVED_OLD)
    assert all(getattr(result, key) is None for key in NEWER_KEYS)
    assert result.teacher_agreement == {}
    assert Result.from_dict({"status": "stopped"}) == Result(status=STOPPED)


def test_unknown_keys_are_kept_and_written_back(tmp_path: Path) -> None:
    path = tmp_path / RESULT_FILE
    path.write_text(json.dumps({"top1": 70.0, "status": "completed", "energy_kwh": 0.5}))
    result = Result.read(path)
    assert result.extra == {"energy_kwh": 0.5} and result.get("energy_kwh") == 0.5 and result.get("top1") == 70.0
    assert result.get("no_such_key") is None
    assert result.to_json_dict()["energy_kwh"] == 0.5


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"top1": 7', "not valid JSON"),
        ("[1, 2]", "holds a JSON array, expected an object"),
        ('{"top1": "high"}', "top1 is 'high', expected float | None"),
        ('{"seed": true}', "seed is True, expected int | None"),
        ('{"seed": 1.5}', "seed is 1.5, expected int | None"),
        ('{"teachers": ["a", 3]}', "teachers is ['a', 3], expected list[str]"),
        ('{"teacher_top1": {"a": null}}', "teacher_top1 is {'a': None}, expected dict[str, float]"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / RESULT_FILE
    path.write_text(text)
    with pytest.raises(ResultError) as raised:
        Result.read(path)
    assert str(raised.value).startswith(f"{path}: {problem}")
    assert isinstance(raised.value, MealError) and raised.value.path == path


def test_a_file_that_is_not_utf8_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / RESULT_FILE
    path.write_bytes(b'{"method": "\xff"}')
    with pytest.raises(ResultError, match=r"not UTF-8 text") as raised:
        Result.read(path)
    assert str(raised.value).startswith(str(path))


def test_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Result.read(tmp_path / RESULT_FILE)


def test_the_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(ResultError(Path("r/result.json"), "not valid JSON")))
    assert str(error) == "r/result.json: not valid JSON" and error.problem == "not valid JSON"


def test_an_int_is_a_float_and_nan_is_kept() -> None:
    result = Result.from_dict({"top1": 90, "img_per_s": math.nan})
    assert result.top1 == 90 and math.isnan(result.img_per_s or 0.0)


def test_best_teacher_top1_is_the_best_finite_teacher() -> None:
    assert Result(teacher_top1={"a": 70.0, "b": math.nan, "c": 75.5}).best_teacher_top1 == 75.5
    assert Result().best_teacher_top1 is None


def test_with_missing_from_fills_only_what_is_missing() -> None:
    earlier = _full()
    now = Result(top1=50.0, steps=1955, ece=None, extra={"future_figure": None, "mine": 1})
    kept = now.with_missing_from(earlier)
    assert kept.top1 == 50.0 and kept.ece == earlier.ece and kept.teachers == []  # an empty list is not missing
    assert kept.extra == {"future_figure": [1, 2], "mine": 1}
    assert now.ece is None, "the original is unchanged"
