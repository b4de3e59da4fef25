"""Plain supervised training with cross-entropy on the labels (`method=ce`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from meal.config.ranges import ranged
from meal.config.schema import MethodConfig
from meal.data.batch import Batch
from meal.methods.base import Method, StepOutput
from meal.methods.registry import register_method


@dataclass
class CEMethodConfig(MethodConfig):
    """Plain supervised training with cross-entropy on the labels."""

    name: str = "ce"
    label_smoothing: float = ranged(0.0, ge=0, le=1)


@register_method
class CrossEntropy(Method):
    """Cross-entropy to the hard labels, optional label smoothing. Trains teachers for the zoo."""

    name = "ce"
    schema = CEMethodConfig
    uses_teachers = False

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        """Loss = CE(student(x), y)."""
        logits = self.replica(self.student)(batch.x)
        loss = nn.functional.cross_entropy(logits.float(), batch.y, label_smoothing=self.cfg.label_smoothing)
        return StepOutput(loss, {"ce": loss.detach()})
