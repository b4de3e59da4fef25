"""Decoupled knowledge distillation (DKD; Zhao et al., CVPR 2022), from the teachers' mean softmax (`method=dkd`).

KD's loss splits into a target-class part and a non-target part; DKD weights them separately:

``L = ce_weight * CE(S, y) + w(step) * (alpha * TCKD + beta * NCKD)``

with ``p`` the teachers' mean softmax at temperature ``tau``, ``q = softmax(S / tau)`` and ``t`` the label:

- ``TCKD = tau**2 * KL([p_t, 1 - p_t] || [q_t, 1 - q_t])``, the binary target-vs-rest distributions;
- ``NCKD = tau**2 * KL(p_hat || q_hat)`` over the non-target classes, ``p_hat_i = p_i / (1 - p_t)`` and
  ``q_hat = softmax`` of the student's non-target logits over ``tau`` (the same as ``q_i / (1 - q_t)``);
- ``w(step) = min(1, step / (warmup_epochs * steps per epoch))`` (1 when `warmup_epochs` is 0).

Both terms are averaged over the rows. The non-target distribution is taken from the mean of the teachers'
probabilities, so an ensemble is distilled as one teacher and the targets can come from the teachers
(`soft_labels=online`) or from the soft-label cache (`soft_labels=cached`, :mod:`meal.softlabels`). A row
whose teacher puts all its mass on the label has no non-target distribution and adds 0 to NCKD. The
published CIFAR setting is ``alpha=1``, ``beta=8``, ``tau=4``, a warmup of 20 of 240 epochs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meal.config.ranges import ranged
from meal.config.schema import MethodConfig, SoftLabelConfig
from meal.data.batch import Batch
from meal.errors import ConfigError
from meal.methods.base import Method, StepOutput, Teacher
from meal.methods.registry import register_method
from meal.softlabels import SoftLabels


@dataclass
class DKDMethodConfig(MethodConfig, SoftLabelConfig):
    """Decoupled KD: label CE plus separately weighted target-class and non-target-class KL terms."""

    name: str = "dkd"
    ce_weight: float = ranged(1.0, ge=0)
    alpha: float = ranged(1.0, ge=0)
    beta: float = ranged(8.0, ge=0)
    temperature: float = ranged(4.0, gt=0)
    warmup_epochs: float = ranged(0.0, ge=0)


def dkd_terms(
    student_logits: Tensor, teacher_probs: Tensor, labels: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """``(TCKD, NCKD)`` of one batch, each ``tau**2`` times its KL averaged over the rows (see the module docstring).

    Args:
        student_logits: ``(B, K)`` student logits.
        teacher_probs: ``(B, K)`` the teachers' mean softmax at `temperature` (rows summing to 1).
        labels: ``(B,)`` class indices.
        temperature: the softmax temperature ``tau``.
    """
    p = teacher_probs.detach().float()
    z = student_logits.float() / temperature
    target = F.one_hot(labels, z.shape[1]).bool()
    log_q = F.log_softmax(z, dim=1)
    log_q_t = log_q.gather(1, labels[:, None]).squeeze(1)
    masked = z.masked_fill(target, float("-inf"))
    log_rest = torch.logsumexp(masked, dim=1) - torch.logsumexp(z, dim=1)  # log(1 - q_t), computed stably
    p_t = p.gather(1, labels[:, None]).squeeze(1)
    p_rest = p.masked_fill(target, 0.0).sum(dim=1)  # 1 - p_t, as the non-target mass actually stored
    tckd = torch.xlogy(p_t, p_t) - p_t * log_q_t + torch.xlogy(p_rest, p_rest) - p_rest * log_rest
    p_hat = p.masked_fill(target, 0.0) / p_rest.clamp_min(torch.finfo(p.dtype).tiny)[:, None]
    log_q_hat = F.log_softmax(masked, dim=1).masked_fill(target, 0.0)
    nckd = (torch.xlogy(p_hat, p_hat) - p_hat * log_q_hat).sum(dim=1)
    scale = temperature**2
    return tckd.mean() * scale, nckd.mean() * scale


@register_method
class DecoupledKD(Method):
    """Label CE plus the target-class and non-target-class parts of KD, weighted by alpha and beta."""

    name = "dkd"
    schema = DKDMethodConfig
    supports_cached_soft_labels = True

    def __init__(
        self, cfg: Any, student: nn.Module, teachers: Sequence[Teacher], num_classes: int, seed: int = 0
    ) -> None:
        super().__init__(cfg, student, teachers, num_classes, seed)
        if not teachers:
            raise ConfigError("teachers", "method 'dkd' needs at least one teacher")
        self.temperature = float(cfg.temperature)
        self.soft_labels = SoftLabels(cfg, teachers, self.temperature)
        self.warmup_steps = 0.0

    def prepare(self, data: Any, cfg: Any) -> None:
        """Open or build the soft-label cache when `soft_labels=cached`; turn the warmup into steps."""
        device = next(self.student.parameters()).device
        self.soft_labels.prepare(data, cfg, device)
        self.warmup_steps = float(self.cfg.warmup_epochs) * len(data.train)

    def warmup(self, step: int) -> float:
        """The distillation terms' weight at global step `step`: linear from 0 to 1 over the warmup."""
        return 1.0 if self.warmup_steps <= 0 else min(1.0, step / self.warmup_steps)

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        """``ce_weight * CE + w(step) * (alpha * TCKD + beta * NCKD)`` for one batch."""
        logits = self.replica(self.student)(batch.x).float()
        targets = self.soft_labels.targets(batch, batch.x)
        ce = F.cross_entropy(logits, batch.y)
        tckd, nckd = dkd_terms(logits, targets.probs, batch.y, self.temperature)
        weight = self.warmup(step)
        loss = float(self.cfg.ce_weight) * ce + weight * (float(self.cfg.alpha) * tckd + float(self.cfg.beta) * nckd)
        return StepOutput(loss, {"ce": ce.detach(), "tckd": tckd.detach(), "nckd": nckd.detach()})
