"""Evaluation beyond top-1: calibration (ECE, NLL), per-class accuracy, agreement with teachers."""

from meal.evaluation.metrics import ECE_BINS, ClassificationMetrics, expected_calibration_error, top1_agreement
from meal.evaluation.predict import evaluate_classifier

__all__ = ["ECE_BINS", "ClassificationMetrics", "evaluate_classifier", "expected_calibration_error", "top1_agreement"]
