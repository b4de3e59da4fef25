"""The run directory contract: one run at a time, resolved config compared on restart and written once
every check has passed, result.json."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from meal.core.result import RESULT_FILE, Result
from meal.engine.checkpoint import atomic_write_bytes, atomic_write_json, atomic_write_text
from meal.errors import MealError
from meal.keys import RESTART_FREE_KEYS
from meal.runlock import RunDirLock

log = logging.getLogger(__name__)

RESOLVED_CONFIG = "resolved_config.yaml"
# Hydra rewrites these in <run_dir>/.hydra/ at every start, before the config check; a copy from the
# last accepted start (in .hydra/accepted/) puts them back when a start is refused.
HYDRA_RECORD = ("config.yaml", "hydra.yaml", "overrides.yaml")
HYDRA_KEPT = "accepted"


def _drop(container: dict, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head not in container:
        return
    if rest:
        if isinstance(container[head], dict):
            _drop(container[head], rest)
    else:
        del container[head]


def comparable_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus the keys that may differ between restarts of one run, as plain containers
    (a choice key's value as its string, as every resolved_config.yaml records it)."""
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(plain, dict)
    for key in RESTART_FREE_KEYS:
        _drop(plain, key)
    return plain


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(name)
            else:
                out += _differences(old[key], new[key], name)
        return out
    return [] if old == new else [prefix]


@contextlib.contextmanager
def hold_run_dir(run_dir: Path, rank0: bool = True, wait: bool = False) -> Iterator[None]:
    """Hold `run_dir`'s lock for the enclosed run (rank 0 only) and undo Hydra's record of a refused start.

    A second start while the lock is held is refused (MealError naming the holder), or with `wait` waits
    for the holder to end. When the run ends with an error, Hydra's record in ``.hydra/`` is put back to
    that of the last accepted start.
    """
    if not rank0:
        yield
        return
    try:
        lock = RunDirLock(run_dir).acquire(wait)
    except MealError:
        _put_back_hydra_record(run_dir)
        raise
    try:
        yield
    except Exception:
        _put_back_hydra_record(run_dir)
        raise
    finally:
        lock.release()


def check_config(cfg: DictConfig, run_dir: Path) -> bool:
    """On restart refuse a config that differs from the run's resolved_config.yaml; write nothing.

    Returns True when the run directory already holds a config (a restart).
    """
    path = run_dir / RESOLVED_CONFIG
    current = comparable_config(cfg)
    record = _hydra_record(run_dir)
    if path.exists():
        try:
            previous = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        except Exception as exc:
            raise MealError(f"{path}: cannot read the run's saved config ({exc}); use a new run directory") from exc
        assert isinstance(previous, dict)
        for key in RESTART_FREE_KEYS:
            _drop(previous, key)
        diff = [key for key in _differences(previous, current) if not _added_at_default(previous, current, key)]
        if diff:
            shown = ", ".join(f"{k} (was {_get(previous, k)!r}, now {_get(current, k)!r})" for k in diff[:4])
            overrides = _restore_hydra_record(record)
            where = f" ({overrides})" if overrides else ""
            raise MealError(
                f"{run_dir}: this run directory holds a run with a different config: {shown}; "
                f"restart it with its original overrides{where}, or use a new directory (hydra.run.dir=...)"
            )
        return True
    return False


def write_config(cfg: DictConfig, run_dir: Path) -> None:
    """Accept this start once every check has passed: write resolved_config.yaml on the first start
    (so a start refused earlier, e.g. for a mistyped path, leaves none) and keep Hydra's record of it."""
    path = run_dir / RESOLVED_CONFIG
    if not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(comparable_config(cfg))))
    _keep_hydra_record(_hydra_record(run_dir))


def _put_back_hydra_record(run_dir: Path) -> None:
    """After a refused start: put back Hydra's record of the last accepted start where this start's differs."""
    record = _hydra_record(run_dir)
    if record is None:
        return
    kept = [name for name in HYDRA_RECORD if (record / HYDRA_KEPT / name).is_file()]
    try:
        if any(
            not (record / n).is_file() or (record / n).read_bytes() != (record / HYDRA_KEPT / n).read_bytes()
            for n in kept
        ):
            _restore_hydra_record(record)
    except OSError as exc:  # e.g. the disk that just stopped the run is full: keep the run's own error
        log.warning("could not put back Hydra's record of the last accepted start in %s (%s)", record, exc)


def _hydra_record(run_dir: Path) -> Path | None:
    """The folder where Hydra recorded this start (config, overrides), when `run_dir` is Hydra's job folder."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    output_dir = OmegaConf.select(hydra_cfg, "runtime.output_dir")
    if hydra_cfg.output_subdir is None or output_dir is None or Path(output_dir).resolve() != run_dir.resolve():
        return None
    return run_dir / str(hydra_cfg.output_subdir)


def _keep_hydra_record(record: Path | None) -> None:
    """Copy Hydra's record of an accepted start to <record>/accepted/."""
    if record is None:
        return
    for name in HYDRA_RECORD:
        if (record / name).is_file():
            atomic_write_bytes(record / HYDRA_KEPT / name, (record / name).read_bytes())


def _restore_hydra_record(record: Path | None) -> Path | None:
    """Put back the record of the last accepted start over this refused one's; return its overrides file."""
    if record is None or not (record / HYDRA_KEPT / "overrides.yaml").is_file():
        return None
    for name in HYDRA_RECORD:
        kept = record / HYDRA_KEPT / name
        if kept.is_file():
            atomic_write_bytes(record / name, kept.read_bytes())
    return record / "overrides.yaml"


def _added_at_default(previous: dict, current: dict, key: str) -> bool:
    """True when `key` is absent from the run's saved config and holds the schema's default now: a key that
    a newer meal added, which changes nothing for a run started before it."""
    from meal.config.schema import NO_DEFAULT, schema_default
    from meal.methods.registry import method_classes

    if _has(previous, key) or not _has(current, key):
        return False
    method = method_classes().get(str(_get(current, "method.name")))
    default = schema_default(key, method.schema if method is not None else None)
    if default is NO_DEFAULT or default != _get(current, key):
        return False
    log.info("%s: not in the run's saved config; the schema's default (%r) is what the run used", key, default)
    return True


def _has(container: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(container, dict) or part not in container:
            return False
        container = container[part]
    return True


def _get(container: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(container, dict) or part not in container:
            return None
        container = container[part]
    return container


def write_result(run_dir: Path, result: Result) -> Path:
    """Atomically write `result` as the run directory's result.json; return the file's path."""
    path = run_dir / RESULT_FILE
    atomic_write_json(path, result.to_json_dict())
    return path
