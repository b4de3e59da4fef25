"""The ensemble's soft targets, computed online from the teachers or unpacked from a cache.

A soft target has two parts:

``probs``
    The mean of the teachers' ``softmax(T_i / tau)``: what the student is distilled towards.
``logits``
    The mean of the teachers' logits ``mean_i T_i``: the teacher rows the MEAL V2 discriminator sees.

Both are float32 ``(B, K)`` tensors and never carry gradients. The same function
(:func:`ensemble_targets`) produces them for online distillation and for building a cache, so a
cache holds exactly what the online path would compute for the same augmented sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from meal.core.frozen import frozen_input, frozen_mode, mean_teacher_probs, usable
from meal.data.batch import to_device

TINY = 1e-12


class SoftTargets(NamedTuple):
    """Mean teacher probabilities at the method's temperature and mean teacher logits, (B, K) each."""

    probs: Tensor
    logits: Tensor

    def mix(self, perm: Tensor, lam: float) -> SoftTargets:
        """``lam * self + (1 - lam) * self[perm]`` (the targets of a CutMix batch built from cached ones)."""
        perm = to_device(perm, self.probs.device)
        return SoftTargets(
            lam * self.probs + (1.0 - lam) * self.probs[perm], lam * self.logits + (1.0 - lam) * self.logits[perm]
        )


def ensemble_targets(models: Sequence[nn.Module], x: Tensor, temperature: float) -> SoftTargets:
    """Run every teacher on `x` and return the mean softmax at `temperature` and the mean logits.

    Teachers run under inference mode, each in the precision of its weights (:mod:`frozen
    <meal.core.frozen>`); the targets are float32 tensors that losses may use.
    """
    with frozen_mode(x.device.type):
        logits = [m(frozen_input(m, x)).float() for m in models]
        probs = mean_teacher_probs(logits, temperature)
        mean_logits = logits[0] if len(logits) == 1 else torch.stack(logits, dim=0).mean(dim=0)
    return SoftTargets(usable(probs), usable(mean_logits))


def pack(probs: Tensor, logits: Tensor, dtype: torch.dtype, topk: int | None) -> dict[str, Tensor]:
    """Storage form of targets with leading shape ``S``: ``(*S, K)`` each.

    Full form: ``values`` ``(*S, 2, K)`` holding probs then logits. Top-k form (``topk`` set and
    smaller than K): ``values`` ``(*S, k)`` the k largest probabilities and ``indices`` ``(*S, k)``
    their classes; logits are not stored.
    """
    num_classes = probs.shape[-1]
    if topk is None or topk >= num_classes:
        return {"values": torch.stack([probs, logits], dim=-2).to(dtype).cpu()}
    values, indices = probs.topk(topk, dim=-1)
    index_dtype = torch.int16 if num_classes <= torch.iinfo(torch.int16).max else torch.int32
    return {"values": values.to(dtype).cpu(), "indices": indices.to(index_dtype).cpu()}


def unpack(values: Tensor, indices: Tensor | None, num_classes: int, temperature: float) -> SoftTargets:
    """Inverse of :func:`pack` for gathered rows ``(B, ...)``.

    A top-k entry is expanded FKD-style: the k stored probabilities at their classes and the
    remaining mass ``1 - sum(top-k)`` spread evenly over the other classes. Its logits are
    ``tau * log(p)``, the logits of the expanded distribution at the method's temperature (equal to
    the mean teacher logits up to a per-row constant only for a single teacher and no truncation).
    """
    values = values.float()
    if indices is None:
        return SoftTargets(values[:, 0], values[:, 1])
    k = values.shape[1]
    rest = ((1.0 - values.sum(dim=1, keepdim=True)) / max(num_classes - k, 1)).clamp_min(0.0)
    probs = rest.expand(values.shape[0], num_classes).clone()
    probs.scatter_(1, indices.long(), values)
    return SoftTargets(probs, temperature * probs.clamp_min(TINY).log())


class OnlineSoftLabels:
    """Soft targets from running every teacher on the (augmented) input of each step."""

    def __init__(self, models: Sequence[nn.Module], temperature: float) -> None:
        self.models = list(models)
        self.temperature = float(temperature)

    def targets(self, x: Tensor) -> SoftTargets:
        """The ensemble's targets for input `x`."""
        return ensemble_targets(self.models, x, self.temperature)
