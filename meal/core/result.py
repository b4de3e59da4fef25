"""A run's result: the typed form of its run directory's ``result.json``.

``result.json`` is the contract between a finished (or stopped) run and everything that reads it later:
the report, a search's objective, ``meal.evaluate`` / ``meal.export`` and W&B's run summary.
:class:`Result` names its fields once; :meth:`Result.to_json_dict` is the JSON object a run writes and
:meth:`Result.read` reads one back.

Reading is tolerant of files written by other versions of meal:

- a field the file lacks (an older meal did not write it) reads as None, or as an empty list or dict for
  ``teachers``, ``teacher_top1`` and ``teacher_agreement``;
- a key this version does not know (a newer meal wrote it) is kept, unchanged, in :attr:`Result.extra`
  and written back by :meth:`Result.to_json_dict`, so nothing a run directory recorded is lost when a run
  is started again by an older meal;
- a file that is not JSON, not a JSON object, or holds a known field of the wrong type raises
  :class:`~meal.errors.ResultError`, whose message starts with the file's path.
"""

from __future__ import annotations

import copy
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from meal.errors import ResultError

#: the name of the file a run directory records its result in
RESULT_FILE = "result.json"

#: ``status`` of a run that trained every epoch of its schedule
COMPLETED = "completed"
#: ``status`` of a run stopped before its last epoch (``trainer.max_steps``); a later start resumes it
STOPPED = "stopped"


@dataclass
class Result:
    """What one run recorded in ``result.json``; each field is the JSON key of the same name.

    Accuracies are percentages (0-100) on the test split unless named ``val_*`` (the validation split
    held out of the training data, ``data.val_split``). A figure a run never computed is None.
    """

    #: the method's name (``method.name``: ``ce``, ``kd``, ``meal_v2``, ...)
    method: str | None = None
    #: the student's architecture (``student.arch``)
    student: str | None = None
    #: the display names of the teachers the student learned from; empty for a run without teachers
    teachers: list[str] = field(default_factory=list)
    #: the teacher set's name (``teachers.name``); None for a run without teachers
    teacher_set: str | None = None
    #: the dataset's name (``data.name``)
    dataset: str | None = None
    #: the run's seed
    seed: int | None = None
    #: epochs trained (the schedule's length for a completed run)
    epochs: int | None = None
    #: optimizer steps taken
    steps: int | None = None
    #: the final test top-1 accuracy; None when the run never evaluated
    top1: float | None = None
    #: the final test top-5 accuracy
    top5: float | None = None
    #: the final validation top-1 accuracy; None without a validation split
    val_top1: float | None = None
    #: the final validation top-5 accuracy
    val_top5: float | None = None
    #: the test top-1 at the epoch ``best_metric`` chose (the epoch saved as ``best.pt``)
    best_top1: float | None = None
    #: the validation top-1 at that epoch; None without a validation split
    best_val_top1: float | None = None
    #: the epoch ``best_metric`` chose
    best_epoch: int | None = None
    #: the key ``best.pt`` was chosen by: ``val_top1`` or ``top1``
    best_metric: str | None = None
    #: the key of the run's sweep objective (the value ``meal.app.run`` returns): ``val_top1`` or ``top1``
    objective: str | None = None
    #: each teacher's test top-1, by display name; empty for a run without teachers
    teacher_top1: dict[str, float] = field(default_factory=dict)
    #: the test top-1 of the teachers' ensemble (mean softmax); None for a run without teachers
    ensemble_top1: float | None = None
    #: the student's parameter count
    params: int | None = None
    #: training throughput, images per second over the whole run (NaN when it never trained)
    img_per_s: float | None = None
    #: the run's wall time in seconds, everything included (its first start's when a start trained nothing)
    wall_s: float | None = None
    #: seconds spent in training epochs
    train_s: float | None = None
    #: optimizer steps skipped for a non-finite loss or gradient
    skipped_steps: int | None = None
    #: the W&B run's id; None when the run was not tracked
    wandb_id: str | None = None
    #: the experiment's name (the ``experiment`` setting)
    experiment: str | None = None
    #: :data:`COMPLETED` or :data:`STOPPED`
    status: str | None = None
    #: expected calibration error (percent) of the final student on the test set; None for a stopped run
    ece: float | None = None
    #: mean negative log-likelihood (nats) of the final student on the test set; None for a stopped run
    nll: float | None = None
    #: percentage of test images where the student predicts the teachers' ensemble's class
    ensemble_agreement: float | None = None
    #: percentage of test images where the student predicts each teacher's class, by display name
    teacher_agreement: dict[str, float] = field(default_factory=dict)
    #: the number of processes (ranks) the run trained on
    world_size: int | None = None
    #: keys of the file this version does not know, with their values; written back as they were
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        """True when the run trained its whole schedule."""
        return self.status == COMPLETED

    @property
    def best_teacher_top1(self) -> float | None:
        """The best finite test top-1 among the teachers; None without teachers."""
        values = [float(v) for v in self.teacher_top1.values() if math.isfinite(v)]
        return max(values) if values else None

    def get(self, key: str) -> Any:
        """The value of ``result.json`` key `key` (a metric named by a setting, e.g. ``objective``):
        the field's value, else the value of a kept unknown key, else None."""
        if key in _FIELD_NAMES:
            return getattr(self, key)
        return self.extra.get(key)

    def with_missing_from(self, other: Result) -> Result:
        """A copy in which each field that is None here, and each unknown key missing here, takes
        `other`'s value (when that is not None)."""
        taken = {
            name: copy.deepcopy(getattr(other, name))
            for name in _FIELD_NAMES
            if getattr(self, name) is None and getattr(other, name) is not None
        }
        extra = copy.deepcopy(self.extra)
        extra |= {k: copy.deepcopy(v) for k, v in other.extra.items() if extra.get(k) is None and v is not None}
        return replace(self, **taken, extra=extra)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON object of ``result.json``: every field by its name, then the kept unknown keys."""
        out = {name: copy.deepcopy(getattr(self, name)) for name in _FIELD_NAMES}
        out |= {k: copy.deepcopy(v) for k, v in self.extra.items() if k not in out}
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike[str] = RESULT_FILE) -> Result:
        """The Result of a JSON object as ``result.json`` holds it (see the module's notes on other versions).

        Raises:
            ResultError: `data` is not a dict, or a known field has a value of the wrong type; the
                message starts with `source` (the file it came from).
        """
        if not isinstance(data, dict):
            raise ResultError(source, f"holds a JSON {_json_kind(data)}, expected an object")
        known: dict[str, Any] = {}
        for name in _FIELD_NAMES:
            if name not in data:
                continue
            value = data[name]
            if not _fits(value, _HINTS[name]):
                raise ResultError(source, f"{name} is {value!r}, expected {_TYPE_TEXT[name]}")
            known[name] = copy.deepcopy(value)
        extra = {str(k): copy.deepcopy(v) for k, v in data.items() if k not in _FIELD_NAMES}
        return cls(**known, extra=extra)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Result:
        """Read a ``result.json`` file.

        Raises:
            OSError: the file cannot be opened (``FileNotFoundError`` when it does not exist).
            ResultError: the file is not UTF-8 JSON, not an object, or a field has the wrong type.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ResultError(path, f"not UTF-8 text ({exc.reason})") from exc
        except json.JSONDecodeError as exc:
            raise ResultError(path, f"not valid JSON ({exc})") from exc
        return cls.from_dict(data, path)


def _json_kind(value: Any) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type `hint` (an int is a float; a bool is neither)."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(_fits(k, key) and _fits(v, item) for k, v in value.items())
    return True  # Any


_HINTS = {name: hint for name, hint in typing.get_type_hints(Result).items() if name != "extra"}
_FIELD_NAMES = tuple(f.name for f in fields(Result) if f.name != "extra")
_TYPE_TEXT = {f.name: str(f.type) for f in fields(Result)}

__all__ = ["COMPLETED", "RESULT_FILE", "STOPPED", "Result"]
