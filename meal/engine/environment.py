"""Seeds, determinism, device and thread settings for one process."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from meal.errors import ConfigError

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> None:
    """Ask torch for deterministic kernels (bit-reproducible runs), or allow cuDNN autotuning."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def select_device(name: str) -> torch.device:
    """'auto' -> CUDA when present (this process's local rank), else CPU; or an explicit device."""
    if name == "auto":
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError("trainer.device", f"'{name}' is not a device", "use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device", "CUDA was asked for but is not available", "use trainer.device=auto")
    return device


def configure_threads(threads: int | None) -> int | None:
    """Set torch's intra-op thread count and return it (None: torch's default was kept).

    `trainer.threads` when set; otherwise, in a Slurm job, the CPUs Slurm gave each task
    (``SLURM_CPUS_PER_TASK``), so a job with ``cpus_per_task=1`` does not run several threads on one core.
    """
    if threads is None:
        slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
        if not slurm:
            return None
        try:
            threads = int(slurm)
        except ValueError:
            log.warning(
                "SLURM_CPUS_PER_TASK=%r is not a number: keeping torch's %d threads", slurm, torch.get_num_threads()
            )
            return None
        if threads < 1:
            return None
        log.info("%d threads (SLURM_CPUS_PER_TASK; trainer.threads overrides it)", threads)
    torch.set_num_threads(int(threads))
    return int(threads)


def rng_state() -> dict:
    """Every generator's state, for checkpoints."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore generator states saved by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
