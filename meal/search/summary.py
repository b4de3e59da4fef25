"""``<sweep_dir>/search.json``: the record of a search, its best trial and every trial it ran.

Written by the sweeper after every batch of trials (so a stopped search has one too) and read by
``python -m meal.report``. Only the standard library is needed to read it.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

SEARCH_FILE = "search.json"
#: trial user attributes set by the sweeper
OVERRIDES_ATTR = "overrides"
JOB_DIR_ATTR = "job_dir"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as search.json lists it."""
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": _finite(trial.value) if trial.values else None,
        "params": dict(trial.params),
        "overrides": list(trial.user_attrs.get(OVERRIDES_ATTR, [])),
        "job_dir": trial.user_attrs.get(JOB_DIR_ATTR),
        "started": trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else None,
        "completed": trial.datetime_complete.isoformat(timespec="seconds") if trial.datetime_complete else None,
    }


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's best completed trial, or None before any trial completed."""
    try:
        return study.best_trial
    except ValueError:
        return None


def search_summary(study: optuna.Study, sampler: str, n_trials: int, storage: str) -> dict[str, Any]:
    """The content of search.json for `study`."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    best = best_trial(study)
    return {
        "study_name": study.study_name,
        "direction": study.direction.name.lower(),
        "sampler": sampler,
        "storage": storage,
        "n_trials": n_trials,
        "n_complete": sum(t.state.name == "COMPLETE" for t in trials),
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_params": dict(best.params) if best else None,
        "best_overrides": list(best.user_attrs.get(OVERRIDES_ATTR, [])) if best else None,
        "best_job_dir": best.user_attrs.get(JOB_DIR_ATTR) if best else None,
        "trials": [trial_record(t) for t in trials],
    }


def write_search(sweep_dir: Path, summary: dict[str, Any]) -> Path:
    """Write `summary` to ``sweep_dir/search.json`` (replaced whole: a reader never sees half a file)."""
    path = sweep_dir / SEARCH_FILE
    tmp = sweep_dir / f".{SEARCH_FILE}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_search(sweep_dir: Path) -> dict[str, Any] | None:
    """``sweep_dir/search.json`` parsed, or None when the directory holds no search."""
    path = Path(sweep_dir) / SEARCH_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None
