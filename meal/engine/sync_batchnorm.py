"""Synchronised BatchNorm for data-parallel training (`trainer.sync_batchnorm`).

Every rank normalises its share of the global batch with the statistics of the whole global batch, so a
BatchNorm student trained on N processes sees the same normalisation, gradients and running statistics as
one process on the whole batch. On CUDA the layers become :class:`torch.nn.SyncBatchNorm` (its fused
kernel). torch has no CPU kernel for it and DistributedDataParallel refuses it on the CPU, so there they
become :class:`CPUSyncBatchNorm`, which gathers the same statistics with two differentiable all-reduces
(sums, then centred squares) over gloo: the backward pass all-reduces the gradients of the statistics, which
is exactly the gradient of the global-batch normalisation.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as torch_dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

log = logging.getLogger(__name__)


_BatchNorm = nn.modules.batchnorm._BatchNorm  # what BatchNorm1d/2d/3d have in common


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm over any input of shape ``(N, C, ...)`` whose training-mode statistics are those of the whole
    global batch when several ranks run (gloo); otherwise plain BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions (N, C, ...), got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise with the global batch's statistics in training mode across several ranks."""
        if not self.training or not _several_ranks():
            return super().forward(x)
        self._check_input_dim(x)
        return self._synced_forward(x)

    def _synced_forward(self, x: torch.Tensor) -> torch.Tensor:
        group = torch_dist.group.WORLD
        dims = [0, *range(2, x.dim())]
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # half precision: statistics in float32
        count = torch.tensor([float(xf.numel() // xf.shape[1])], dtype=xf.dtype, device=xf.device)
        sums = dist_fn.all_reduce(torch.cat([xf.sum(dims), count]), group=group)
        n = sums[-1]
        mean = sums[:-1] / n
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = xf - mean.view(shape)
        var = dist_fn.all_reduce((centred * centred).sum(dims), group=group) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), float(n.detach()))
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1.0 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1.0 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def _several_ranks() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> tuple[nn.Module, int]:
    """Replace every BatchNorm layer of `module` by a synchronised one (:class:`torch.nn.SyncBatchNorm` on
    CUDA, :class:`CPUSyncBatchNorm` on the CPU) that shares its parameters, buffers, mode and forward hooks
    (so taps on a BatchNorm layer keep recording); return the module and the number of layers replaced.
    State-dict keys are unchanged."""
    kind = CPUSyncBatchNorm if device_type == "cpu" else nn.SyncBatchNorm
    if isinstance(module, _BatchNorm) and not isinstance(module, (CPUSyncBatchNorm, nn.SyncBatchNorm)):
        return _synced_copy(module, kind), 1
    replaced = 0
    for name, child in list(module.named_children()):
        new_child, n = convert_sync_batchnorm(child, device_type)
        if new_child is not child:
            setattr(module, name, new_child)
        replaced += n
    return module, replaced


def _synced_copy(bn: _BatchNorm, kind: type[_BatchNorm]) -> _BatchNorm:
    synced = kind(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        synced.weight, synced.bias = bn.weight, bn.bias
    synced.running_mean, synced.running_var = bn.running_mean, bn.running_var
    synced.num_batches_tracked = bn.num_batches_tracked
    synced.train(bn.training)
    for hook in bn._forward_hooks.values():
        synced.register_forward_hook(hook)
    return synced
