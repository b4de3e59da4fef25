"""Data-parallel training across processes (torchrun, or one Slurm task per GPU).

Each process is a rank; the global batch (`data.batch_size`) is split across ranks. The student and every
module a method trains run under :class:`torch.nn.parallel.DistributedDataParallel`, which averages their
gradients in buckets while the backward pass runs; with `trainer.sync_batchnorm` the student's BatchNorm
layers normalise with the whole global batch's statistics. Only rank 0 evaluates, logs, tracks and
writes checkpoints and results.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn

from meal.core.replica import Replica
from meal.engine.sync_batchnorm import convert_sync_batchnorm

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    initialized_here: bool = False


def _env_ranks() -> tuple[int, int, int] | None:
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return (
            int(os.environ["SLURM_PROCID"]),
            int(os.environ["SLURM_NTASKS"]),
            int(os.environ.get("SLURM_LOCALID", "0")),
        )
    return None


def _slurm_master() -> None:
    """Point MASTER_ADDR/PORT at the first node of the Slurm job when torchrun has not set them."""
    if "MASTER_ADDR" not in os.environ:
        import subprocess

        nodes = os.environ.get("SLURM_JOB_NODELIST", "localhost")
        try:
            first = subprocess.run(
                ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True, timeout=30
            ).stdout.split()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            first = "localhost"
        os.environ["MASTER_ADDR"] = first
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))


def sync_batchnorm(model: nn.Module, info: DistInfo) -> int:
    """Make `model`'s BatchNorm layers synchronise over the ranks (`trainer.sync_batchnorm`); return how
    many layers now do. With one process there is nothing to synchronise and the model is left as it is."""
    if info.world_size == 1:
        return 0
    device_type = next(model.parameters()).device.type
    _, replaced = convert_sync_batchnorm(model, device_type)
    log.info("trainer.sync_batchnorm: %d BatchNorm layers synchronised over %d ranks", replaced, info.world_size)
    return replaced


def data_parallel_wrapper(info: DistInfo) -> Any:
    """A function that gives one trainable module its DistributedDataParallel replica on this process's device
    (`wrap(module, find_unused_parameters)`); a module with no trainable parameter is returned as it is."""

    def wrap(module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        if not any(p.requires_grad for p in module.parameters()):
            return module
        device_ids = [info.device.index] if info.device is not None and info.device.type == "cuda" else None
        return Replica(
            module,
            device_ids=device_ids,
            find_unused_parameters=find_unused_parameters,
            gradient_as_bucket_view=True,
        )

    return wrap


def from_rank0(value: Any) -> Any:
    """Rank 0's `value` on every rank (e.g. the run's result, so every rank returns the objective)."""
    box = [value]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def setup() -> DistInfo:
    """Join the process group when launched with several ranks; a no-op for one process."""
    ranks = _env_ranks()
    if ranks is None:
        return DistInfo()
    rank, world_size, local_rank = ranks
    device = None
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    initialized_here = False
    if not torch_dist.is_initialized():
        if "WORLD_SIZE" not in os.environ or "MASTER_ADDR" not in os.environ:
            _slurm_master()
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world_size))
        torch_dist.init_process_group("nccl" if device is not None else "gloo", rank=rank, world_size=world_size)
        initialized_here = True
    log.info("rank %d of %d (local rank %d)", rank, world_size, local_rank)
    return DistInfo(rank, world_size, local_rank, device, initialized_here)


def teardown(info: DistInfo, barrier: bool = False) -> None:
    """Leave the process group if this process created it.

    With `barrier` (after a run every rank finished) the ranks first wait for each other, so that none
    destroys its communicators while a peer's last collective is still in flight (gloo aborts then).
    """
    if info.initialized_here and torch_dist.is_initialized():
        if barrier:
            torch_dist.barrier()
        torch_dist.destroy_process_group()
