"""Hinton knowledge distillation, the standard baseline (`method=kd`).

``L = (1 - alpha) * CE(S, y) + alpha * tau**2 * KL(p || softmax(S / tau))``

with ``p = mean_i softmax(T_i / tau)`` the softmax of the teacher at temperature ``tau``, or the mean
of the teachers' softmaxes for an ensemble (`temperature`, default 4; `alpha`, default 0.9). The
``tau**2`` factor keeps the soft term's gradient scale independent of the temperature (Hinton et al.,
2015). The targets come from the teachers (`soft_labels=online`) or from a cache of the ensemble's
outputs at this temperature (`soft_labels=cached`, see :mod:`meal.softlabels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import nn

from meal.config.ranges import ranged
from meal.config.schema import MethodConfig, SoftLabelConfig
from meal.data.batch import Batch
from meal.errors import ConfigError
from meal.methods.base import Method, StepOutput, Teacher
from meal.methods.components import kl_to_probs
from meal.methods.registry import register_method
from meal.softlabels import SoftLabels


@dataclass
class KDMethodConfig(MethodConfig, SoftLabelConfig):
    """Hinton knowledge distillation: hard-label CE + temperature-scaled KL to the ensemble."""

    name: str = "kd"
    alpha: float = ranged(0.9, ge=0, le=1)
    temperature: float = ranged(4.0, gt=0)


@register_method
class KnowledgeDistillation(Method):
    """Hard-label cross-entropy plus the temperature-scaled KL to the teachers' mean softmax."""

    name = "kd"
    schema = KDMethodConfig
    supports_cached_soft_labels = True

    def __init__(
        self, cfg: Any, student: nn.Module, teachers: Sequence[Teacher], num_classes: int, seed: int = 0
    ) -> None:
        super().__init__(cfg, student, teachers, num_classes, seed)
        if not teachers:
            raise ConfigError("teachers", "method 'kd' needs at least one teacher")
        self.alpha = float(cfg.alpha)
        self.temperature = float(cfg.temperature)
        self.soft_labels = SoftLabels(cfg, teachers, self.temperature)

    def prepare(self, data: Any, cfg: Any) -> None:
        """Open or build the soft-label cache when `soft_labels=cached`."""
        device = next(self.student.parameters()).device
        self.soft_labels.prepare(data, cfg, device)

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        """``(1 - alpha) * CE + alpha * tau^2 * KL`` for one batch."""
        logits = self.replica(self.student)(batch.x).float()
        targets = self.soft_labels.targets(batch, batch.x)
        ce = F.cross_entropy(logits, batch.y)
        kl = kl_to_probs(logits, targets.probs, self.temperature)
        loss = (1.0 - self.alpha) * ce + self.alpha * kl
        return StepOutput(loss, {"ce": ce.detach(), "kd_kl": kl.detach()})
