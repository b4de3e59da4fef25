"""Top-1/top-5 evaluation of a model, of each teacher and of a teacher ensemble."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from meal.core.frozen import teacher_logits
from meal.data.batch import Batch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of samples whose label is among the top-k predictions, for each k."""
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices
    hits = top.eq(labels[:, None])
    return [int(hits[:, : min(k, k_max)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate_outputs(forward: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[Batch]) -> dict[str, float]:
    """top1/top5 (percent) and mean cross-entropy of `forward`'s logits (or log-probabilities)."""
    total, top1, top5, loss = 0, 0, 0, 0.0
    for batch in batches:
        logits = forward(batch.x).float()
        c1, c5 = topk_correct(logits, batch.y)
        top1 += c1
        top5 += c5
        loss += float(nn.functional.cross_entropy(logits, batch.y, reduction="sum"))
        total += batch.y.numel()
    total = max(total, 1)
    return {"top1": 100.0 * top1 / total, "top5": 100.0 * top5 / total, "loss": loss / total}


def evaluate_model(model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
    """Evaluate one model in eval mode, restoring its train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_outputs(model, batches)
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_teachers(
    teachers: Sequence[tuple[str, nn.Module]], batches: Iterable[Batch]
) -> tuple[dict[str, float], float | None]:
    """Each teacher's top-1 and the ensemble's top-1 (mean softmax), in percent, in one pass."""
    if not teachers:
        return {}, None
    correct = dict.fromkeys([name for name, _ in teachers], 0)
    ensemble_correct, total = 0, 0
    for batch in batches:
        probs = []
        for name, model in teachers:
            logits = teacher_logits(model, batch.x)
            correct[name] += topk_correct(logits, batch.y, (1,))[0]
            probs.append(logits.softmax(dim=1))
        ensemble_correct += topk_correct(torch.stack(probs).mean(dim=0), batch.y, (1,))[0]
        total += batch.y.numel()
    total = max(total, 1)
    return {k: 100.0 * v / total for k, v in correct.items()}, 100.0 * ensemble_correct / total
