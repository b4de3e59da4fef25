"""Plain supervised training with cross-entropy on the labels (`method=ce`)."""

from __future__ import annotations

from torch import nn

from meal.data.batch import Batch
from meal.methods.base import Method, StepOutput


class CrossEntropy(Method):
    """Cross-entropy to the hard labels, optional label smoothing. Trains teachers for the zoo."""

    name = "ce"
    uses_teachers = False

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        """Loss = CE(student(x), y)."""
        logits = self.student(batch.x)
        loss = nn.functional.cross_entropy(logits.float(), batch.y, label_smoothing=self.cfg.label_smoothing)
        return StepOutput(loss, {"ce": loss.detach()})
METHOD = CrossEntropy
