"""The Optuna study of a search: its sampler, its sqlite storage, and what a resumed search still has to do.

The study lives in an RDB storage (by default ``sqlite:///<sweep_dir>/optuna.db``) and is reloaded
when the same search starts again into the same sweep directory. Trial ``n`` runs as Hydra job ``n``,
so its run directory is ``<sweep_dir>/<n>``: a trial still RUNNING in the storage (its sweep was
stopped) is launched again under the same number and its run resumes from its checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import optuna
from optuna.samplers import BaseSampler, QMCSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from meal.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "qmc")
DIRECTIONS = ("maximize", "minimize")
#: study user attributes that record what the trials were run with
FIXED_ATTR = "fixed_overrides"
SPACE_ATTR = "search_space"


def make_sampler(name: str, seed: int | None) -> BaseSampler:
    """The Optuna sampler called `name` (``tpe``, ``random`` or ``qmc``), seeded with `seed`."""
    if name == "tpe":
        return TPESampler(seed=seed)
    if name == "random":
        return RandomSampler(seed=seed)
    if name == "qmc":
        return QMCSampler(seed=seed)
    raise ConfigError("hydra.sweeper.sampler", f"unknown sampler '{name}'", f"choose one of: {', '.join(SAMPLERS)}")


def check_direction(direction: str) -> str:
    """`direction` when it is ``maximize`` or ``minimize``; a ConfigError otherwise."""
    if direction not in DIRECTIONS:
        raise ConfigError("hydra.sweeper.direction", f"unknown direction '{direction}'", "choose maximize or minimize")
    return direction


def sqlite_path(storage: str) -> Path | None:
    """The database file of an ``sqlite:///`` storage URL; None for any other storage."""
    prefix = "sqlite:///"
    return Path(storage[len(prefix) :]) if storage.startswith(prefix) else None


def open_study(storage: str, study_name: str, direction: str, sampler: BaseSampler) -> optuna.Study:
    """Create the study, or load it when `storage` already holds one called `study_name`.

    A loaded study must optimise in the same `direction`.
    """
    path = sqlite_path(storage)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    rdb = optuna.storages.RDBStorage(storage)
    study = optuna.create_study(
        storage=rdb, study_name=study_name, direction=check_direction(direction), sampler=sampler, load_if_exists=True
    )
    stored = study.direction.name.lower()
    if stored != direction:
        raise ConfigError(
            "hydra.sweeper.direction",
            f"is {direction}, but study '{study_name}' in {storage} was started to {stored}",
            f"set hydra.sweeper.direction={stored}, or start the search in a new hydra.sweep.dir",
        )
    return study


def check_same_search(study: optuna.Study, fixed: Sequence[str], space: Mapping[str, str]) -> None:
    """Record the fixed overrides and the search space in a new study; refuse a resumed one that differs.

    Trials of one study must be comparable: a search started again must pass the same fixed overrides
    and search the same space.
    """
    stored_fixed = study.user_attrs.get(FIXED_ATTR)
    stored_space = study.user_attrs.get(SPACE_ATTR)
    if stored_fixed is None and stored_space is None:
        study.set_user_attr(FIXED_ATTR, list(fixed))
        study.set_user_attr(SPACE_ATTR, dict(space))
        return
    fix = "start the search again with the same overrides and params, or in a new hydra.sweep.dir"
    if list(stored_fixed or []) != list(fixed):
        raise ConfigError(
            "hydra.sweep.dir",
            f"holds study '{study.study_name}' run with the overrides {' '.join(stored_fixed or []) or '(none)'}, "
            f"not {' '.join(fixed) or '(none)'}",
            fix,
        )
    if dict(stored_space or {}) != dict(space):
        raise ConfigError(
            "hydra.sweeper.params",
            f"differ from the search space of study '{study.study_name}' ({', '.join(sorted(stored_space or {}))})",
            fix,
        )


def interrupted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials a stopped search left RUNNING, by number: they are launched again to resume."""
    return sorted(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)), key=lambda t: t.number)


def trials_to_ask(study: optuna.Study, n_trials: int) -> int:
    """How many new trials to ask for so that the study holds `n_trials` (waiting, enqueued ones count as new)."""
    started = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    return max(0, n_trials - len(started))


def consecutive_runs(numbers: Sequence[int]) -> list[list[int]]:
    """Split sorted trial numbers into runs of consecutive numbers (one launcher call each)."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return runs
