"""Run a student (and optionally teachers) over a split and accumulate :class:`ClassificationMetrics`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from meal.core.frozen import teacher_logits
from meal.data.batch import Batch
from meal.evaluation.metrics import ClassificationMetrics


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module,
    batches: Iterable[Batch],
    num_classes: int,
    teachers: Sequence[tuple[str, nn.Module]] = (),
) -> dict[str, Any]:
    """Every figure of :meth:`ClassificationMetrics.result` for `model` on `batches` (eval mode, restored after).

    With `teachers` (name, frozen model) the student's top-1 agreement with each teacher and with their
    mean-softmax ensemble is measured on the same batches.
    """
    was_training = model.training
    model.eval()
    metrics = ClassificationMetrics(num_classes, [name for name, _ in teachers])
    try:
        for batch in batches:
            logits = model(batch.x).float()
            metrics.update(logits, batch.y, [teacher_logits(t, batch.x).float() for _, t in teachers])
    finally:
        model.train(was_training)
    return metrics.result()
