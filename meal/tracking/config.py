"""Schema of the ``logger`` config group."""

from __future__ import annotations

from dataclasses import dataclass, field

from meal.core.choice import Choice


class LoggerBackend(Choice):
    """`logger.name`: track with Weights & Biases, or with nothing besides the run directory."""

    wandb = "wandb"
    none = "none"


class LoggerMode(Choice):
    """`logger.mode` (:func:`meal.tracking.mode.resolve_mode`)."""

    auto = "auto"
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class LoggerConfig:
    """Where and how a run's metrics are tracked besides the run directory's own files.

    Attributes:
        name: ``wandb`` to track with Weights & Biases, ``none`` for no tracker.
        project: W&B project.
        entity: W&B entity (user or team); ``None`` uses the account's default.
        mode: ``auto`` (online when an API key is configured, else offline), ``online``,
            ``offline`` or ``disabled``.
        group: W&B group; ``None`` keeps the group the run is started with (its sweep).
        run_name: W&B display name; ``None`` keeps the name the run is started with.
        tags: extra W&B tags, added to those the run is started with.
        job_type: W&B job type; ``None`` keeps the job type the run is started with.
        dir: unused; W&B files always go to ``<run_dir>/wandb``.
    """

    name: LoggerBackend = LoggerBackend.wandb
    project: str = "meal"
    entity: str | None = None
    mode: LoggerMode = LoggerMode.auto
    group: str | None = None
    run_name: str | None = None
    tags: list[str] = field(default_factory=list)
    job_type: str | None = None
    dir: str | None = None
