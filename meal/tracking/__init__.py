"""Experiment tracking: W&B (online or offline) on rank 0, a tracker that records nothing elsewhere.

``build_tracker`` starts the tracker of a run; ``read_wandb_run`` reads back what a W&B run wrote to
its local files. Importing this package does not import wandb.
"""

from meal.tracking.base import NullTracker, Tracker
from meal.tracking.build import build_tracker
from meal.tracking.config import LoggerConfig
from meal.tracking.offline_reader import read_wandb_run

__all__ = ["LoggerConfig", "NullTracker", "Tracker", "build_tracker", "read_wandb_run"]
