"""Find the jobs of one or more sweep directories and read their ``result.json`` files."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meal.core.result import RESULT_FILE, Result
from meal.errors import MealError, ResultError

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
CONFIG_FILE = Path(".hydra") / "config.yaml"
HYDRA_FILE = Path(".hydra") / "hydra.yaml"

#: status of a record whose result.json could not be parsed
UNREADABLE = "unreadable"
#: value shown for a swept key that a job neither overrode nor has in its saved config
DEFAULT_VALUE = "(default)"
#: value shown for a key a job deleted with ``~key``
DELETED_VALUE = "(deleted)"

_MISSING = object()


class ReportError(MealError):
    """A sweep directory cannot be reported on (missing, or holds no result.json)."""


def number(value: Any) -> float | None:
    """Return ``value`` as a finite float, or None when it is missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def render_value(value: Any) -> str:
    """Render a config value the way it is written on a Hydra command line (``[0.1,1]``, ``true``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(render_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{render_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def parse_overrides(items: Iterable[Any]) -> dict[str, str]:
    """Turn Hydra override strings (``key=value``, ``+key=value``, ``~key``) into ``{key: value}``.

    Values are kept as the raw strings (stripped), so ``method.gamma=[0.1,1]`` maps
    ``method.gamma`` to ``"[0.1,1]"``. Items without ``=`` (other than deletions) are ignored.
    """
    out: dict[str, str] = {}
    for item in items:
        text = str(item).strip()
        if text.startswith("~"):
            out[text[1:].split("=", 1)[0].strip()] = DELETED_VALUE
            continue
        key, sep, value = text.lstrip("+").partition("=")
        if not sep or not key.strip():
            logger.debug("ignoring override without '=': %r", text)
            continue
        out[key.strip()] = value.strip()
    return out


def _load_yaml(path: Path) -> Any:
    """Load a YAML file; None (with a warning) when it exists but cannot be read."""
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        logger.warning("%s: cannot read (%s)", path, str(exc).splitlines()[0] if str(exc) else exc)
        return None


def read_overrides(job_dir: Path) -> dict[str, str]:
    """Read ``job_dir/.hydra/overrides.yaml``; an empty dict when it is missing or not a list."""
    path = job_dir / OVERRIDES_FILE
    data = _load_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, list):
        logger.warning("%s: expected a list of override strings, ignoring it", path)
        return {}
    return parse_overrides(data)


def _lookup(tree: Any, dotted: str) -> Any:
    """Follow a dotted key (``method.gamma``) through nested dicts; ``_MISSING`` when absent."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


@dataclass
class RunRecord:
    """One job of a sweep: where its result.json lives, its overrides and its parsed result (an empty
    :class:`Result` when the file could not be read, ``problem`` saying why)."""

    path: Path
    sweep_dir: Path
    overrides: dict[str, str]
    result: Result
    problem: str | None = None
    _config: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    _choices: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def job_dir(self) -> Path:
        """The job's run directory (the folder holding result.json)."""
        return self.path.parent

    @property
    def name(self) -> str:
        """The job directory relative to its sweep directory (``"3"``, ``"a/3"``)."""
        try:
            rel = self.job_dir.relative_to(self.sweep_dir)
        except ValueError:
            return str(self.job_dir)
        return rel.as_posix() or "."

    @property
    def status(self) -> str:
        """``result.json``'s status; :data:`UNREADABLE` when the file could not be parsed."""
        if self.problem is not None:
            return UNREADABLE
        return self.result.status if self.result.status is not None else "unknown"

    @property
    def seed(self) -> str | None:
        """The run's seed as text, from result.json or else from the ``seed`` override."""
        if self.result.seed is not None:
            return str(self.result.seed)
        return self.overrides.get("seed")

    def value(self, name: str) -> float | None:
        """A numeric result field by its result.json key (a finite float, else None);
        ``best_teacher_top1`` is the max over ``teacher_top1``."""
        if name == "best_teacher_top1":
            return self.result.best_teacher_top1
        return number(self.result.get(name))

    def setting(self, key: str) -> str:
        """The job's value for an override key.

        The override itself when the job has one; otherwise the value in the job's saved
        ``.hydra/config.yaml`` (dotted keys) or its config-group choice in ``.hydra/hydra.yaml``,
        rendered like an override; otherwise :data:`DEFAULT_VALUE`.
        """
        if key in self.overrides:
            return self.overrides[key]
        if self._config is None:
            loaded = _load_yaml(self.job_dir / CONFIG_FILE)
            self._config = loaded if isinstance(loaded, dict) else {}
        found = _lookup(self._config, key)
        if found is not _MISSING and not isinstance(found, dict):
            return render_value(found)
        if self._choices is None:
            choices = _lookup(_load_yaml(self.job_dir / HYDRA_FILE), "hydra.runtime.choices")
            self._choices = choices if isinstance(choices, dict) else {}
        if key in self._choices:
            return render_value(self._choices[key])
        return DEFAULT_VALUE


def find_result_files(sweep_dir: Path) -> list[Path]:
    """All ``result.json`` files below ``sweep_dir`` (any depth, hidden folders skipped), sorted."""
    found: list[Path] = []
    for root, dirs, files in os.walk(sweep_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if RESULT_FILE in files:
            found.append(Path(root) / RESULT_FILE)
    return sorted(found, key=_natural_path_key)


def _natural_path_key(path: Path) -> tuple[tuple[int, int, str], ...]:
    """Sort ``2`` before ``10`` in job directory names."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def read_run(path: Path, sweep_dir: Path) -> RunRecord:
    """Read one job; a malformed result.json gives a record with ``problem`` set and a warning."""
    overrides = read_overrides(path.parent)
    try:
        result = Result.read(path)
    except (OSError, ResultError) as exc:
        text = exc.problem if isinstance(exc, ResultError) else str(exc)
        problem = text.splitlines()[0] if text else type(exc).__name__
        logger.warning("%s: malformed %s, skipped (%s)", path, RESULT_FILE, problem)
        return RunRecord(path=path, sweep_dir=sweep_dir, overrides=overrides, result=Result(), problem=problem)
    return RunRecord(path=path, sweep_dir=sweep_dir, overrides=overrides, result=result)


def collect_runs(dirs: Sequence[str | os.PathLike[str]]) -> list[RunRecord]:
    """Read every job of the given sweep directories, in directory order.

    Malformed result.json files are returned as records with ``status == "unreadable"``
    (and logged as warnings), so that callers can report them as skipped.

    Raises:
        ReportError: a directory does not exist or holds no result.json.
    """
    runs: list[RunRecord] = []
    seen: set[Path] = set()
    for entry in dirs:
        sweep_dir = Path(entry)
        if not sweep_dir.is_dir():
            raise ReportError(f"{sweep_dir}: no such sweep directory")
        files = find_result_files(sweep_dir)
        if not files:
            raise ReportError(f"{sweep_dir}: holds no {RESULT_FILE} (not a finished sweep directory?)")
        for path in files:
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            runs.append(read_run(path, sweep_dir))
    return runs


def read_manifests(dirs: Sequence[str | os.PathLike[str]]) -> dict[str, dict[str, Any]]:
    """``{dir: manifest}`` for the sweep directories that hold a readable ``manifest.json``."""
    manifests: dict[str, dict[str, Any]] = {}
    for entry in dirs:
        path = Path(entry) / MANIFEST_FILE
        if not path.is_file():
            continue
        try:
            with path.open(encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            logger.warning("%s: malformed manifest, ignored (%s)", path, exc)
            continue
        if not isinstance(data, dict):
            logger.warning("%s: manifest is not a JSON object, ignored", path)
            continue
        manifests[str(entry)] = data
    return manifests
