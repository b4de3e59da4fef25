"""A Hydra sweeper that searches with Optuna's ask/tell API: ``python launch.py -m hydra/sweeper=optuna_tpe``.

Each batch of `n_jobs` trials is asked from the study, launched with one call of the configured
launcher (one job array on the submitit Slurm launcher) and told its results. Trial ``n`` is Hydra
job ``n``, so its run directory is ``<sweep_dir>/<n>``. The study is kept in `storage` (default
``sqlite:///<sweep_dir>/optuna.db``): the same command started again into the same sweep directory
reloads it, launches the trials a stopped search left RUNNING again under their own numbers (their runs
resume from their checkpoints) and asks new trials until the study holds `n_trials`. A trial that
fails (an error, a non-finite objective) is told FAIL and the search goes on.

Before anything is launched, the job config with the fixed overrides is composed and
:func:`meal.objective.check_search_objective` refuses a search that would tune on the test set.
Hydra loads sweepers only from the ``hydra_plugins`` package: the class the presets name is
:class:`hydra_plugins.meal_search.optuna_sweeper.OptunaSweeper`, a subclass of the one here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from meal.entry import INTERRUPTED
from meal.errors import ConfigError
from meal.objective import check_search_objective
from meal.search.results import objective_from_run_dir
from meal.search.space import parse_search_space
from meal.search.study import (
    check_same_search,
    consecutive_runs,
    interrupted_trials,
    make_sampler,
    open_study,
    trials_to_ask,
)
from meal.search.summary import JOB_DIR_ATTR, OVERRIDES_ATTR, best_trial, search_summary, write_search

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one launched trial gave: a finite objective `value`, or None with the `reason` it failed."""

    value: float | None
    reason: str = ""


def outcome_of(job: JobReturn | None, job_dir: Path) -> Outcome:
    """The objective of a trial from its JobReturn, or from its run directory when the launcher returned none."""
    if job is None:
        value, reason = objective_from_run_dir(job_dir)
        return Outcome(value, reason)
    if job.status != JobStatus.COMPLETED:
        return Outcome(None, f"{type(job._return_value).__name__}: {job._return_value}")
    value = job.return_value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Outcome(None, f"returned {value!r}, not a number")
    if not math.isfinite(float(value)):
        return Outcome(None, f"returned {value}")
    return Outcome(float(value))


class OptunaSearchSweeper(Sweeper):
    """Search the space of `params` (and the command line's sweep overrides) with an Optuna sampler.

    Args:
        sampler: ``tpe``, ``random`` or ``qmc``.
        seed: the sampler's seed (None: not reproducible).
        direction: ``maximize`` (launch.py returns a top-1) or ``minimize``.
        n_trials: how many trials the study holds when the search ends (all starts together).
        n_jobs: trials per batch, i.e. per launcher call (one Slurm job array).
        study_name: the study's name in `storage`.
        storage: an Optuna RDB storage URL, e.g. ``sqlite:///<sweep_dir>/optuna.db``.
        params: ``{key: expression}`` in Hydra's override grammar (see :mod:`meal.search.space`).
    """

    def __init__(
        self,
        sampler: str = "tpe",
        seed: int | None = None,
        direction: str = "maximize",
        n_trials: int = 20,
        n_jobs: int = 1,
        study_name: str = "search",
        storage: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        if int(n_trials) < 1:
            raise ConfigError("hydra.sweeper.n_trials", f"is {n_trials}", "give at least 1 trial")
        if int(n_jobs) < 1:
            raise ConfigError("hydra.sweeper.n_jobs", f"is {n_jobs}", "give at least 1 trial per batch")
        self.sampler_name = str(sampler)
        self.seed = None if seed is None else int(seed)
        self.direction = str(direction)
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.study_name = str(study_name)
        self.storage = storage
        self.params: dict[str, Any] = dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep the driver's config and instantiate the configured launcher."""
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- the search ---------------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        """Run the search: resume interrupted trials, then ask, launch and tell batches until `n_trials`."""
        assert self.config is not None and self.hydra_context is not None and self.launcher is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = parse_search_space(self.params, arguments, parser)
        if not space.dimensions:
            raise ConfigError(
                "hydra.sweeper.params",
                "names no dimension to search",
                "add one under hydra.sweeper.params, or give one on the command line, e.g. "
                "'method.eta=interval(0.01,1.0)' or optim.lr=0.05,0.1",
            )
        check_search_objective(self._job_config(list(space.fixed)), str(self.config.hydra.sweeper._target_))

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        storage = self.storage or f"sqlite:///{sweep_dir.absolute() / 'optuna.db'}"
        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
        study = open_study(storage, self.study_name, self.direction, make_sampler(self.sampler_name, self.seed))
        check_same_search(study, space.fixed, space.describe())

        returns: list[Sequence[JobReturn]] = []
        resumed = interrupted_trials(study)
        if resumed:
            log.info("Resuming %d interrupted trial(s): %s", len(resumed), ", ".join(str(t.number) for t in resumed))
        for start in range(0, len(resumed), self.n_jobs):
            batch = resumed[start : start + self.n_jobs]
            jobs = {}
            for trial in batch:
                overrides = list(trial.user_attrs.get(OVERRIDES_ATTR) or space.overrides(trial.params))
                job_dir = self._prepare(study, trial.number, overrides)
                if job_dir is not None:
                    jobs[trial.number] = (overrides, job_dir)
            returns.extend(self._run_batch(study, jobs))
            write_search(sweep_dir, search_summary(study, self.sampler_name, self.n_trials, storage))

        done = self.n_trials - trials_to_ask(study, self.n_trials)
        if done:
            log.info("Study '%s' holds %d of %d trial(s)", self.study_name, done, self.n_trials)
        while (remaining := trials_to_ask(study, self.n_trials)) > 0:
            jobs = {}
            for _ in range(min(self.n_jobs, remaining)):
                trial = study.ask(space.distributions)
                overrides = space.overrides(trial.params)
                trial.set_user_attr(OVERRIDES_ATTR, overrides)
                job_dir = self._prepare(study, trial.number, overrides)
                if job_dir is not None:
                    trial.set_user_attr(JOB_DIR_ATTR, str(job_dir))
                    jobs[trial.number] = (overrides, job_dir)
            returns.extend(self._run_batch(study, jobs))
            write_search(sweep_dir, search_summary(study, self.sampler_name, self.n_trials, storage))

        path = write_search(sweep_dir, search_summary(study, self.sampler_name, self.n_trials, storage))
        best = best_trial(study)
        if best is None:
            log.warning("No trial completed; %s lists the failures", path)
        else:
            log.info(
                "Best trial %d: %.4f with %s (%s)",
                best.number,
                best.value,
                " ".join(best.user_attrs.get(OVERRIDES_ATTR, [])),
                best.user_attrs.get(JOB_DIR_ATTR),
            )
        return returns

    def _job_config(self, overrides: list[str]) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        return self.hydra_context.config_loader.load_sweep_config(master_config=self.config, sweep_overrides=overrides)

    def _prepare(self, study: optuna.Study, number: int, overrides: list[str]) -> Path | None:
        """Where trial `number` runs (``hydra.sweep.dir/hydra.sweep.subdir`` of its job config), composing it
        as the launcher will; None, with the trial told FAIL, when a value it was given cannot be composed."""
        try:
            cfg = self._job_config(overrides)
            with open_dict(cfg):
                cfg.hydra.job.num = number
            return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        except Exception as exc:
            self._tell(study, number, Outcome(None, f"its config cannot be composed: {exc}"))
            return None

    def _run_batch(self, study: optuna.Study, jobs: Mapping[int, tuple[list[str], Path]]) -> list[Sequence[JobReturn]]:
        """Launch the trials `jobs` (``{number: (overrides, run dir)}``) and tell the study each one's outcome."""
        returns: list[Sequence[JobReturn]] = []
        for numbers in consecutive_runs(sorted(jobs)):
            log.info("Launching trial(s) %s", ", ".join(str(n) for n in numbers))
            results = self._launch([jobs[n][0] for n in numbers], numbers[0])
            if results is not None:
                returns.append(results)
            for i, number in enumerate(numbers):
                outcome = outcome_of(results[i] if results is not None else None, jobs[number][1])
                self._tell(study, number, outcome)
        return returns

    def _launch(self, batch: list[list[str]], first: int) -> Sequence[JobReturn] | None:
        """One launcher call; None when it raised (a job failed), after logging why. Ctrl-C stops the search."""
        try:
            return self.launcher.launch(batch, initial_job_idx=first)
        except SystemExit as exc:
            if exc.code == INTERRUPTED:
                raise
            log.warning(
                "A trial ended the launcher with exit status %s; reading the results from the run dirs", exc.code
            )
        except Exception as exc:
            log.warning("The launcher raised %s: %s; reading the results from the run dirs", type(exc).__name__, exc)
        return None

    @staticmethod
    def _tell(study: optuna.Study, number: int, outcome: Outcome) -> None:
        if outcome.value is None:
            log.warning("Trial %d failed: %s", number, outcome.reason)
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            log.info("Trial %d: %.4f", number, outcome.value)
            study.tell(number, outcome.value)
