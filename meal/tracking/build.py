"""Building a run's tracker from the ``logger`` config group."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from meal.errors import ConfigError
from meal.tracking.base import NullTracker, Tracker
from meal.tracking.config import LoggerBackend
from meal.tracking.mode import resolve_mode
from meal.tracking.run_id import load_or_create_run_id
from meal.tracking.wandb_tracker import WandbTracker, reset_wandb, start_wandb_run

logger = logging.getLogger(__name__)

BACKENDS = LoggerBackend.values()
MAX_TAG_LENGTH = 64


def build_tracker(
    logger_cfg: Any,
    run_dir: Path,
    config: Mapping[str, Any],
    *,
    name: str,
    group: str,
    job_type: str = "train",
    tags: list[str] | None = None,
    rank: int = 0,
) -> Tracker:
    """Start the tracker of one run.

    Args:
        logger_cfg: the ``logger`` config (:class:`~meal.tracking.config.LoggerConfig` fields).
        run_dir: the run directory; W&B files go to ``<run_dir>/wandb`` and the W&B run id is kept
            in ``<run_dir>/wandb_id``, so a restart in the same directory resumes the same W&B run.
        config: the run's resolved config, stored with the W&B run.
        name: W&B display name, unless ``logger.run_name`` is set.
        group: W&B group (the sweep), unless ``logger.group`` is set.
        job_type: W&B job type, unless ``logger.job_type`` is set.
        tags: W&B tags; ``logger.tags`` are added.
        rank: process rank; only rank 0 tracks.

    Returns:
        A W&B tracker, or a tracker that records nothing (``logger.name=none``, rank != 0,
        ``logger.mode=disabled``, or W&B failing to start: training never stops because of W&B).

    Raises:
        ConfigError: ``logger.name`` or ``logger.mode`` is not a known value.
    """
    backend = _option(logger_cfg, "name", "wandb")
    if backend not in BACKENDS:
        raise ConfigError("logger.name", f"unknown logger {backend!r}", f"use one of {', '.join(BACKENDS)}")
    mode, reason = resolve_mode(_option(logger_cfg, "mode", "auto"))
    if rank != 0 or backend == "none":
        return NullTracker()
    if mode == "disabled":
        logger.info("W&B disabled (%s)", reason)
        return NullTracker(mode="disabled")

    run_dir = Path(run_dir)
    run_id = load_or_create_run_id(run_dir)
    init_kwargs = {
        "project": _option(logger_cfg, "project", "meal"),
        "entity": _option(logger_cfg, "entity", None),
        "group": _option(logger_cfg, "group", None) or group,
        "name": _option(logger_cfg, "run_name", None) or name,
        "job_type": _option(logger_cfg, "job_type", None) or job_type,
        "tags": _clean_tags([*(tags or []), *(_option(logger_cfg, "tags", None) or [])]),
        "config": _plain_config(config),
    }
    sync_hint = f"sync later with `wandb sync {run_dir / 'wandb' / 'offline-run-*'}`"
    if mode == "online":
        try:
            run = start_wandb_run(mode, run_dir, run_id, **init_kwargs)
        except Exception as exc:
            logger.warning(
                "W&B failed to start online (%s: %s); falling back to offline mode, %s",
                type(exc).__name__,
                exc,
                sync_hint,
            )
            reset_wandb()
            mode = "offline"
            run = _start_or_warn(mode, run_dir, run_id, init_kwargs)
        else:
            logger.info("W&B online: %s; run %s at %s", reason, run.id, getattr(run, "url", None))
    else:
        run = _start_or_warn(mode, run_dir, run_id, init_kwargs)
        if run is not None:
            logger.info("W&B offline: %s; run %s, %s", reason, run.id, sync_hint)
    if run is None:
        return NullTracker()
    return WandbTracker(run, mode)


def _start_or_warn(mode: str, run_dir: Path, run_id: str, init_kwargs: dict[str, Any]) -> Any:
    """Start the W&B run, or warn and return ``None`` when W&B fails to start."""
    try:
        return start_wandb_run(mode, run_dir, run_id, **init_kwargs)
    except Exception as exc:
        logger.warning("W&B failed to start (%s: %s); continuing with files only", type(exc).__name__, exc)
        return None


def _option(cfg: Any, key: str, default: Any) -> Any:
    """``cfg.key`` for a config object or mapping, ``default`` when the key is absent."""
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The run config as plain containers (W&B stores dicts, not omegaconf nodes), a choice key's value as
    the plain string it was written as (``none``, not ``AdversarialMode.none``)."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True, enum_to_str=True)  # type: ignore[return-value]
    return _plain(dict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value.name if isinstance(value, Enum) else value


def _clean_tags(tags: Iterable[Any]) -> list[str]:
    """Tags W&B accepts: non-empty, at most 64 characters (longer ones are cut), no repeats."""
    cleaned: list[str] = []
    for tag in tags:
        text = str(tag).strip()
        if len(text) > MAX_TAG_LENGTH:
            logger.warning("W&B tag %r is longer than %d characters; it is cut", text, MAX_TAG_LENGTH)
            text = text[:MAX_TAG_LENGTH]
        if text and text not in cleaned:
            cleaned.append(text)
    return cleaned
