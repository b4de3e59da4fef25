"""What a run optimises for: the figure launch.py returns to a sweeper and the one `best.pt` is chosen by.

`trainer.objective` is ``auto`` (validation top-1 when `data.val_split` > 0, else test top-1), ``val``
(validation top-1; a run without a validation split is refused) or ``test`` (test top-1, also when a
validation split exists: the explicit opt-in to tune on the test set).

A *search* is a multirun whose sweeper chooses the next trials from the values returned so far (Optuna,
Nevergrad, Ax, ...): every Hydra sweeper except the basic grid sweeper, which only enumerates the
overrides it was given. A search whose objective would be the test set is refused (naming
`data.val_split`) unless `trainer.objective=test` says so explicitly. A grid sweep and a single run may
return test top-1: nothing is chosen automatically from it. :func:`check_search_objective` is the hook an
optimising sweeper calls in its driver before launching trials; every trial calls it again at its start.
"""

from __future__ import annotations

from typing import Any

from meal.config.schema import Objective
from meal.errors import ConfigError

OBJECTIVES = Objective.values()
#: sweepers that only enumerate the overrides they are given (nothing is chosen from the returned values)
GRID_SWEEPERS = frozenset({"hydra._internal.core_plugins.basic_sweeper.BasicSweeper"})


def objective_metric(objective: str, val_split: float) -> str:
    """The result.json key a run returns and picks `best.pt` by: ``val_top1`` or ``top1`` (test)."""
    if objective not in OBJECTIVES:
        raise ConfigError("trainer.objective", f"unknown objective '{objective}'", "choose auto, val or test")
    if objective == "test":
        return "top1"
    if val_split > 0:
        return "val_top1"
    if objective == "val":
        raise ConfigError(
            "data.val_split",
            "is 0, so trainer.objective=val has no validation split to use",
            "set data.val_split, e.g. data.val_split=0.1",
        )
    return "top1"


def is_search(sweeper_target: str | None) -> bool:
    """True for a sweeper that optimises the returned value (any sweeper but the basic grid sweeper)."""
    return bool(sweeper_target) and sweeper_target not in GRID_SWEEPERS


def check_search_objective(cfg: Any, sweeper_target: str | None) -> str:
    """Refuse a search that would tune on the test set; return the objective's result key.

    `sweeper_target` is the sweeper's ``_target_`` (``hydra.sweeper._target_``), or None outside a multirun.
    """
    metric = objective_metric(str(cfg.trainer.objective), float(cfg.data.val_split))
    if metric == "top1" and is_search(sweeper_target) and cfg.trainer.objective != "test":
        name = str(sweeper_target).rsplit(".", 1)[-1]
        raise ConfigError(
            "data.val_split",
            f"is 0, so this search ({name}) would tune on the test set",
            "set data.val_split, e.g. data.val_split=0.1, to search on a validation split, or opt in to "
            "searching on the test set with trainer.objective=test",
        )
    return metric


def current_sweeper() -> str | None:
    """The running multirun's sweeper ``_target_``; None in a single run or outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:  # pragma: no cover - hydra is a dependency of meal
        return None
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if str(hydra_cfg.mode) != "RunMode.MULTIRUN":
        return None
    target = hydra_cfg.sweeper.get("_target_") if hydra_cfg.get("sweeper") is not None else None
    return str(target) if target else None
