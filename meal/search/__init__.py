"""Hyper-parameter search: a Hydra sweeper over Optuna's ask/tell API with a resumable sqlite study.

- :mod:`meal.search.space`: the search space from Hydra override expressions (``interval``, ``choice``, ...).
- :mod:`meal.search.study`: create or reload the study, pick the sampler, find the trials to run again.
- :mod:`meal.search.summary`: ``search.json``, the record of every trial and the best one.
- :mod:`meal.search.sweeper`: :class:`~meal.search.sweeper.OptunaSearchSweeper`, selected with
  ``hydra/sweeper=optuna_tpe`` (or ``optuna_random``).

Nothing is imported here, so that reading a finished search (:mod:`meal.search.summary`, used by
``python -m meal.report``) does not import Optuna.
"""
