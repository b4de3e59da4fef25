"""meal.search.sweeper and meal.search.study: batches, resume and failures on an sqlite study, no training.

The sweeper runs against the real composed config with a fake launcher that records its calls and
returns a value computed from each trial's overrides.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, RunMode
from optuna.trial import TrialState

from meal.config import register
from meal.errors import ConfigError
from meal.search.space import parse_search_space
from meal.search.study import consecutive_runs, interrupted_trials, open_study, trials_to_ask
from meal.search.summary import read_search
from meal.search.sweeper import OptunaSearchSweeper
from tests.conftest import REPO

TARGET = "hydra_plugins.meal_search.optuna_sweeper.OptunaSweeper"
SPACE = {"method.eta": "interval(0.0, 1.0)"}
ARGS = ["method=meal_v2", "data.val_split=0.1"]


def _eta(overrides: Sequence[str]) -> float:
    return next(float(o.split("=", 1)[1]) for o in overrides if o.startswith("method.eta="))


class FakeLauncher:
    """Records each launch as ``(first job number, [overrides, ...])``; a trial's value is `value(overrides)`."""

    def __init__(self, value: Callable[[Sequence[str]], Any] = _eta) -> None:
        self.calls: list[tuple[int, list[list[str]]]] = []
        self.value = value

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        self.calls.append((initial_job_idx, [list(o) for o in job_overrides]))
        returns = []
        for overrides in job_overrides:
            value = self.value(overrides)
            failed = isinstance(value, BaseException)
            if isinstance(value, SystemExit):
                raise value
            returns.append(
                JobReturn(
                    overrides=list(overrides),
                    status=JobStatus.FAILED if failed else JobStatus.COMPLETED,
                    _return_value=value,
                )
            )
        return returns


def _sweeper(sweep_dir: Path, launcher: FakeLauncher, overrides: Sequence[str] = (), **options: Any):
    register()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(REPO / "conf")))
    config = loader.load_configuration(
        "config",
        overrides=["hydra/sweeper=optuna_tpe", f"hydra.sweep.dir={sweep_dir}", *overrides],
        run_mode=RunMode.MULTIRUN,
    )
    assert config.hydra.sweeper._target_ == TARGET
    options = {"n_trials": 4, "n_jobs": 2, "study_name": "s", "params": SPACE, "seed": 1, **options}
    sweeper = OptunaSearchSweeper(**options)
    sweeper.config, sweeper.hydra_context, sweeper.launcher = config, HydraContext(loader, None), launcher
    return sweeper


def _study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


@pytest.mark.slow
def test_batches_are_launcher_calls_numbered_like_the_trials(tmp_path: Path) -> None:
    launcher = FakeLauncher()
    _sweeper(tmp_path, launcher).sweep(["method=meal_v2", "data.val_split=0.1", "seed=2"])
    assert [first for first, _ in launcher.calls] == [0, 2]
    assert [len(batch) for _, batch in launcher.calls] == [2, 2]
    assert all(
        o[:3] == ["method=meal_v2", "data.val_split=0.1", "seed=2"] for _, batch in launcher.calls for o in batch
    )
    trials = _study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert [t.value for t in trials] == [t.params["method.eta"] for t in trials]
    summary = read_search(tmp_path)
    best = max(trials, key=lambda t: t.value)
    assert (summary["best_trial"], summary["best_value"], summary["n_complete"]) == (best.number, best.value, 4)
    assert summary["best_overrides"][-1] == f"method.eta={best.params['method.eta']!r}"
    assert [t["job_dir"] for t in summary["trials"]] == [str(tmp_path / str(n)) for n in range(4)]
    assert summary["sampler"] == "tpe" and summary["direction"] == "maximize"


@pytest.mark.slow
def test_search_on_the_test_set_is_refused_before_any_study(tmp_path: Path) -> None:
    launcher = FakeLauncher()
    with pytest.raises(ConfigError, match=r"^data\.val_split: is 0, so this search \(OptunaSweeper\)"):
        _sweeper(tmp_path, launcher).sweep([])
    assert launcher.calls == [] and not (tmp_path / "optuna.db").exists()


@pytest.mark.slow
def test_resume_reruns_interrupted_trials_under_their_numbers_and_keeps_completed_ones(tmp_path: Path) -> None:
    _sweeper(tmp_path, FakeLauncher(), n_trials=2).sweep(ARGS)
    study = _study(tmp_path)
    before = {t.number: (t.value, t.datetime_complete) for t in study.trials}
    # a stopped search: trial 2 was asked and launched, then the driver died (the trial stays RUNNING)
    stopped = study.ask(parse_search_space(SPACE, []).distributions)
    overrides = [*ARGS, f"method.eta={stopped.params['method.eta']!r}"]
    stopped.set_user_attr("overrides", overrides)
    assert [t.number for t in interrupted_trials(study)] == [2] and trials_to_ask(study, 5) == 2

    launcher = FakeLauncher()
    _sweeper(tmp_path, launcher, n_trials=5).sweep(ARGS)
    assert launcher.calls[0] == (2, [overrides])  # the interrupted trial first, as job 2, with its own overrides
    assert [first for first, _ in launcher.calls[1:]] == [3] and len(launcher.calls[1][1]) == 2
    study = _study(tmp_path)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert {n: (study.trials[n].value, study.trials[n].datetime_complete) for n in (0, 1)} == before
    assert study.trials[2].value == stopped.params["method.eta"]
    # started again at its end: nothing left to launch
    again = FakeLauncher()
    _sweeper(tmp_path, again, n_trials=5).sweep(ARGS)
    assert again.calls == [] and len(_study(tmp_path).trials) == 5


@pytest.mark.slow
def test_failed_trials_are_told_fail_and_the_search_goes_on(tmp_path: Path) -> None:
    outcomes = iter([RuntimeError("boom"), math.nan, 0.5, 0.25])
    launcher = FakeLauncher(lambda overrides: next(outcomes))
    _sweeper(tmp_path, launcher).sweep(ARGS)
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    summary = json.loads((tmp_path / "search.json").read_text())
    assert (summary["best_trial"], summary["best_value"]) == (2, 0.5)
    assert [t["value"] for t in summary["trials"]] == [None, None, 0.5, 0.25]


@pytest.mark.slow
def test_a_failed_launch_reads_the_values_from_the_run_dirs(tmp_path: Path) -> None:
    def launch_fails(overrides: Sequence[str]) -> Any:
        return SystemExit(2)

    # job 0 completed before the launcher raised; job 1 left no result
    (tmp_path / "0").mkdir(parents=True)
    (tmp_path / "0" / "result.json").write_text(
        json.dumps({"status": "completed", "objective": "val_top1", "val_top1": 71.5})
    )
    _sweeper(tmp_path, FakeLauncher(launch_fails), n_trials=2).sweep(ARGS)
    study = _study(tmp_path)
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, 71.5), (TrialState.FAIL, None)]


@pytest.mark.slow
def test_ctrl_c_in_a_trial_stops_the_search_and_leaves_it_resumable(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        _sweeper(tmp_path, FakeLauncher(lambda overrides: SystemExit(130))).sweep(ARGS)
    assert stopped.value.code == 130
    assert [t.state for t in _study(tmp_path).trials] == [TrialState.RUNNING, TrialState.RUNNING]


@pytest.mark.slow
def test_a_resumed_study_must_be_the_same_search(tmp_path: Path) -> None:
    _sweeper(tmp_path, FakeLauncher(), n_trials=1).sweep(ARGS)
    with pytest.raises(ConfigError, match=r"^hydra\.sweep\.dir: holds study 's' run with the overrides"):
        _sweeper(tmp_path, FakeLauncher(), n_trials=2).sweep(["method=meal_v2", "data.val_split=0.2"])
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.params: differ"):
        _sweeper(tmp_path, FakeLauncher(), n_trials=2, params={"method.eta": "interval(0.0, 0.5)"}).sweep(ARGS)
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.direction: is minimize"):
        open_study(f"sqlite:///{tmp_path / 'optuna.db'}", "s", "minimize", optuna.samplers.RandomSampler())
    assert len(_study(tmp_path).trials) == 1


@pytest.mark.slow
def test_a_trial_whose_config_cannot_be_composed_fails_without_a_launch(tmp_path: Path) -> None:
    launcher = FakeLauncher()
    _sweeper(tmp_path, launcher, n_trials=2).sweep(["method=meal_v1", "data.val_split=0.1"])  # eta is a list there
    assert launcher.calls == []
    assert [t.state for t in _study(tmp_path).trials] == [TrialState.FAIL, TrialState.FAIL]
    assert read_search(tmp_path)["best_trial"] is None


def test_consecutive_runs() -> None:
    assert consecutive_runs([2, 3, 5, 7, 8, 9]) == [[2, 3], [5], [7, 8, 9]]
    assert consecutive_runs([]) == []
