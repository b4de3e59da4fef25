"""A trial's objective read back from its run directory's ``result.json``.

Used when the launcher returned no result for a trial (a job of the batch failed and the launcher
raised, or the in-process launcher was ended by a trial's error) and by the tests that check a search.
"""

from __future__ import annotations

import math
from pathlib import Path

from meal.core.result import COMPLETED, RESULT_FILE, Result
from meal.errors import ResultError

#: the objective's key when result.json does not name it
DEFAULT_OBJECTIVE = "val_top1"


def objective_from_run_dir(run_dir: Path) -> tuple[float | None, str]:
    """``(value, "")`` for a completed run with a finite objective, else ``(None, why not)``."""
    path = Path(run_dir) / RESULT_FILE
    try:
        result = Result.read(path)
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except OSError as exc:
        return None, f"{path} cannot be read: {exc}"
    except ResultError as exc:
        return None, f"{path} cannot be read: {exc.problem}"
    if result.status != COMPLETED:
        return None, f"{path} says status {result.status!r}, not {COMPLETED!r}"
    key = result.objective or DEFAULT_OBJECTIVE
    value = result.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, f"{path} holds {key}={value!r}, not a finite number"
    return float(value), ""
