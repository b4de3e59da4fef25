"""ECE, NLL, per-class accuracy and teacher agreement against values computed by hand on fixed logits."""

from __future__ import annotations

import math

import pytest
import torch

from meal.evaluation import ClassificationMetrics, expected_calibration_error, top1_agreement

# Four samples, three classes, given as probabilities (logits = log p, so softmax gives p back).
STUDENT_P = [[0.90, 0.05, 0.05], [0.62, 0.28, 0.10], [0.20, 0.70, 0.10], [0.05, 0.05, 0.90]]
LABELS = [0, 1, 1, 0]
TEACHER_A_P = [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]  # argmax 0, 0, 1, 2
TEACHER_B_P = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.9, 0.05, 0.05]]  # argmax 0, 1, 1, 0


def logits(p: list[list[float]]) -> torch.Tensor:
    return torch.tensor(p, dtype=torch.float64).log()


def test_ece_by_hand() -> None:
    # confidences 0.9 (correct), 0.62 (wrong), 0.7 (correct), 0.9 (wrong); 15 bins of width 1/15:
    # 0.9 -> (13/15, 14/15] holds two samples, accuracy 1/2, confidence 0.9: 2/4 * |0.5 - 0.9| = 0.2
    # 0.62 -> (9/15, 10/15]: 1/4 * |0 - 0.62| = 0.155;  0.7 -> (10/15, 11/15]: 1/4 * |1 - 0.7| = 0.075
    assert expected_calibration_error(logits(STUDENT_P), torch.tensor(LABELS)) == pytest.approx(43.0, abs=1e-9)


def test_ece_bins_are_equal_width_and_right_closed() -> None:
    # Both confidences 0.95 and 0.99 share the last bin (14/15, 1]: accuracy 1/2, confidence 0.97 -> 47%.
    p = [[0.95, 0.05], [0.01, 0.99]]
    assert expected_calibration_error(logits(p), torch.tensor([0, 0])) == pytest.approx(47.0, abs=1e-9)
    # With 2 bins, 0.4 (right) and 0.95 (wrong) fall in different bins: 1/2 * |1 - 0.4| + 1/2 * |0 - 0.95|.
    p = [[0.4, 0.3, 0.3], [0.025, 0.95, 0.025]]
    assert expected_calibration_error(logits(p), torch.tensor([0, 0]), bins=2) == pytest.approx(77.5, abs=1e-9)
    # A perfectly calibrated bin: confidence 0.5 twice, one right and one wrong -> 0.
    p = [[0.5, 0.5], [0.5, 0.5]]
    assert expected_calibration_error(logits(p), torch.tensor([0, 1])) == pytest.approx(0.0, abs=1e-9)


def test_every_figure_by_hand_and_batches_add_up() -> None:
    whole = ClassificationMetrics(3, ["a", "b"])
    whole.update(logits(STUDENT_P), torch.tensor(LABELS), [logits(TEACHER_A_P), logits(TEACHER_B_P)])
    halves = ClassificationMetrics(3, ["a", "b"])
    for part in (slice(0, 1), slice(1, 4)):
        halves.update(
            logits(STUDENT_P)[part], torch.tensor(LABELS)[part], [logits(TEACHER_A_P)[part], logits(TEACHER_B_P)[part]]
        )
    for figures in (whole.result(), halves.result()):
        assert figures["n"] == 4
        assert figures["top1"] == pytest.approx(50.0)  # predictions 0, 0, 1, 2 against labels 0, 1, 1, 0
        assert figures["top5"] == pytest.approx(100.0)  # three classes: always within the top 5
        assert figures["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.28) + math.log(0.7) + math.log(0.05)) / 4)
        assert figures["ece"] == pytest.approx(43.0)
        assert figures["per_class_top1"] == {"0": pytest.approx(50.0), "1": pytest.approx(50.0), "2": None}
        # The ensemble (mean softmax) predicts 0, 1, 1, 0: right on all four, agrees with the student on 1 and 3.
        assert figures["ensemble_top1"] == pytest.approx(100.0)
        assert figures["ensemble_agreement"] == pytest.approx(50.0)
        assert figures["teacher_top1"] == {"a": pytest.approx(50.0), "b": pytest.approx(100.0)}
        assert figures["teacher_agreement"] == {"a": pytest.approx(100.0), "b": pytest.approx(50.0)}


def test_top1_agreement_uses_the_mean_softmax_not_a_vote() -> None:
    # Two teachers, two samples. Sample 0: A says class 0 at 0.51, B says class 1 at 0.99: the mean
    # softmax picks class 1 (0.74 vs 0.26). Sample 1: both pick class 0.
    a = logits([[0.51, 0.49], [0.9, 0.1]])
    b = logits([[0.01, 0.99], [0.8, 0.2]])
    student = logits([[0.3, 0.7], [0.4, 0.6]])  # predicts 1, 1
    assert top1_agreement(student, [a, b]) == pytest.approx(50.0)
    assert top1_agreement(student, [a]) == pytest.approx(0.0)


def test_without_teachers_no_agreement_is_reported() -> None:
    metrics = ClassificationMetrics(3)
    metrics.update(logits(STUDENT_P), torch.tensor(LABELS))
    assert "ensemble_agreement" not in metrics.result() and "teacher_agreement" not in metrics.result()
