"""Classification figures from logits, accumulated batch by batch: top-1/top-5, per-class accuracy, expected
calibration error, negative log-likelihood, and top-1 agreement of a student with teachers and their ensemble.

Accuracies, agreement and ECE are in percent; NLL is the mean cross-entropy in nats. The expected
calibration error uses `ECE_BINS` equal-width confidence bins ``(0, 1/15], (1/15, 2/15], ..., (14/15, 1]``
(a confidence of exactly 0 falls in the first): ``ECE = sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)|``,
where the confidence of a sample is its largest softmax probability and its prediction that class
(Guo et al., ICML 2017). The teacher ensemble is the mean of the teachers' softmax outputs; agreement is
the share of samples whose student top-1 class equals the ensemble's (or one teacher's) top-1 class
(Stanton et al., NeurIPS 2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

ECE_BINS = 15


def _percent(part: float, whole: float) -> float | None:
    return 100.0 * part / whole if whole > 0 else None


class ClassificationMetrics:
    """Sums over batches from which :meth:`result` computes every figure exactly (no per-sample storage)."""

    def __init__(self, num_classes: int, teacher_names: Sequence[str] = (), bins: int = ECE_BINS) -> None:
        self.num_classes = num_classes
        self.teacher_names = list(teacher_names)
        self.bins = bins
        self.total = 0
        self.top1 = 0
        self.top5 = 0
        self.nll = 0.0
        self.bin_confidence = torch.zeros(bins, dtype=torch.float64)
        self.bin_correct = torch.zeros(bins, dtype=torch.float64)
        self.class_count = torch.zeros(num_classes, dtype=torch.float64)
        self.class_correct = torch.zeros(num_classes, dtype=torch.float64)
        self.teacher_correct = dict.fromkeys(self.teacher_names, 0)
        self.teacher_agree = dict.fromkeys(self.teacher_names, 0)
        self.ensemble_correct = 0
        self.ensemble_agree = 0

    def update(self, logits: Tensor, labels: Tensor, teacher_logits: Sequence[Tensor] = ()) -> None:
        """Add one batch: the student's logits (B, C), the labels (B,) and each teacher's logits, in name order."""
        if len(teacher_logits) != len(self.teacher_names):
            raise ValueError(f"{len(teacher_logits)} teacher outputs for {len(self.teacher_names)} teachers")
        logits = logits.detach().double().cpu()
        labels = labels.detach().long().cpu()
        probs = logits.softmax(dim=1)
        confidence, prediction = probs.max(dim=1)
        correct = prediction.eq(labels)
        k = min(5, logits.shape[1])
        self.top1 += int(correct.sum())
        self.top5 += int(logits.topk(k, dim=1).indices.eq(labels[:, None]).any(dim=1).sum())
        self.nll += float(functional.cross_entropy(logits, labels, reduction="sum"))
        self.total += int(labels.numel())
        edges = torch.linspace(0.0, 1.0, self.bins + 1, dtype=torch.float64)[1:-1]
        which = torch.bucketize(confidence, edges, right=False)  # bin b holds (b/bins, (b+1)/bins]
        self.bin_confidence += torch.bincount(which, weights=confidence, minlength=self.bins)
        self.bin_correct += torch.bincount(which, weights=correct.double(), minlength=self.bins)
        self.class_count += torch.bincount(labels, minlength=self.num_classes).double()[: self.num_classes]
        self.class_correct += torch.bincount(labels[correct], minlength=self.num_classes).double()[: self.num_classes]
        if not self.teacher_names:
            return
        teacher_probs = [t.detach().double().cpu().softmax(dim=1) for t in teacher_logits]
        for name, p in zip(self.teacher_names, teacher_probs):
            top = p.argmax(dim=1)
            self.teacher_correct[name] += int(top.eq(labels).sum())
            self.teacher_agree[name] += int(top.eq(prediction).sum())
        ensemble = torch.stack(teacher_probs).mean(dim=0).argmax(dim=1)
        self.ensemble_correct += int(ensemble.eq(labels).sum())
        self.ensemble_agree += int(ensemble.eq(prediction).sum())

    def ece(self) -> float | None:
        """Expected calibration error over the samples so far, in percent."""
        if self.total == 0:
            return None
        gaps = (self.bin_correct - self.bin_confidence).abs()  # |B| * |acc(B) - conf(B)|
        return float(100.0 * gaps.sum() / self.total)

    def result(self) -> dict[str, Any]:
        """Every figure: ``n``, ``top1``, ``top5``, ``nll``, ``ece``, ``per_class_top1`` ({class: percent, None
        for a class with no sample}); with teachers also ``teacher_top1``, ``ensemble_top1``,
        ``teacher_agreement`` and ``ensemble_agreement``."""
        per_class = {
            str(c): _percent(float(self.class_correct[c]), float(self.class_count[c])) for c in range(self.num_classes)
        }
        out: dict[str, Any] = {
            "n": self.total,
            "top1": _percent(self.top1, self.total),
            "top5": _percent(self.top5, self.total),
            "nll": self.nll / self.total if self.total else None,
            "ece": self.ece(),
            "per_class_top1": per_class,
        }
        if self.teacher_names:
            out |= {
                "teacher_top1": {n: _percent(c, self.total) for n, c in self.teacher_correct.items()},
                "ensemble_top1": _percent(self.ensemble_correct, self.total),
                "teacher_agreement": {n: _percent(c, self.total) for n, c in self.teacher_agree.items()},
                "ensemble_agreement": _percent(self.ensemble_agree, self.total),
            }
        return out


def expected_calibration_error(logits: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """ECE (percent) of `logits` against `labels` with `bins` equal-width confidence bins."""
    metrics = ClassificationMetrics(int(logits.shape[1]), bins=bins)
    metrics.update(logits, labels)
    ece = metrics.ece()
    if ece is None:
        raise ValueError("no samples")
    return ece


def top1_agreement(student_logits: Tensor, teacher_logits: Sequence[Tensor]) -> float:
    """Percent of samples whose student top-1 class is the teachers' mean-softmax top-1 class."""
    ensemble = torch.stack([t.double().softmax(dim=1) for t in teacher_logits]).mean(dim=0).argmax(dim=1)
    return 100.0 * float(student_logits.argmax(dim=1).eq(ensemble).double().mean())
