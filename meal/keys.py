"""Config keys that do not say what a run computes, defined once for the whole package.

Three places need them: the sweep report (:mod:`meal.reporting.aggregate`: keys that never count as
swept), W&B run names (:mod:`meal.tracking.naming`: keys left out of a name) and the run directory
(:mod:`meal.rundir`: keys that may change between the starts of one run). This module imports nothing
from meal, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

#: where and how a run executes, logs and reads its inputs, never what it computes
EXECUTION_KEYS: tuple[str, ...] = (
    "hydra",
    "paths",
    "logger",
    "cluster",
    "resources",
    "trainer.device",
    "trainer.progress",
    "trainer.log_every_steps",
    "trainer.threads",
    "data.workers",
    "data.download",
)

#: keys that never count as swept: the execution keys and the seed (results are grouped over seeds)
NOT_SWEPT_KEYS: tuple[str, ...] = ("seed", *EXECUTION_KEYS)

#: keys that may differ between the starts of one run directory: the execution keys, where the data
#: lives (moved data), and the stopping rules a resumed run may change (`trainer.max_steps`, the NaN policy)
RESTART_FREE_KEYS: tuple[str, ...] = (
    *EXECUTION_KEYS,
    "trainer.max_steps",
    "trainer.nonfinite",
    "trainer.max_skipped_steps",
    "data.root",
)


def key_patterns(keys: Iterable[str]) -> tuple[str, ...]:
    """Glob patterns matching each key as an override: the key itself, its sub-keys and its group options.

    ``logger`` gives ``logger``, ``logger.*``, ``logger/*`` and ``logger@*`` (``logger.mode=offline``,
    ``hydra/launcher=slurm``, ``logger@x=...``).
    """
    return tuple(pattern for key in keys for pattern in (key, f"{key}.*", f"{key}/*", f"{key}@*"))


def override_key(item: str) -> str:
    """The key of an override line: ``+logger.mode=offline`` -> ``logger.mode``."""
    return item.lstrip("+~").split("=", 1)[0]


def is_not_swept(key: str) -> bool:
    """True when an override key (``trainer.log_every_steps``, ``hydra/launcher``) never counts as swept."""
    return any(fnmatchcase(key, pattern) for pattern in key_patterns(NOT_SWEPT_KEYS))
