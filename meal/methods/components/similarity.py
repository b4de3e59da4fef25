"""Similarity losses between student and teacher outputs.

MEAL (v1) compares every selected block output of the student with the same
block of the (randomly chosen) teacher using one of these distances:

``ce``
    Soft cross-entropy ``-sum_k softmax(T/tau)_k * log_softmax(S/tau)_k`` per
    row, averaged over the rows (the published default, with ``tau = 1``).
``l1`` / ``l2``
    Mean absolute / mean squared error, averaged over *all elements*
    (``B * D`` of them), as ``torch.nn.L1Loss`` / ``torch.nn.MSELoss`` do by
    default. The temperature is not used.
``l1_soft`` / ``l2_soft``
    The same element-wise means between ``softmax(S/tau)`` and
    ``softmax(T/tau)``.
``kl``
    ``KL(softmax(T/tau) || softmax(S/tau)) * tau**2``, summed over classes and
    averaged over rows ("batchmean").

MEAL V2 distils towards the *mean of the teachers' softmax probabilities*;
:func:`soft_cross_entropy` and :func:`kl_to_probs` take such a probability
tensor directly, and :func:`meal.core.frozen.mean_teacher_probs` builds it.

Teacher tensors are always treated as constants: they are detached, so no
gradient ever reaches a teacher through these losses.

All losses return a 0-dim tensor. The softmax-based kinds expect 2-d inputs
``(B, D)`` (class / feature axis 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from meal.core.choice import Choice
from meal.errors import ConfigError


class Similarity(Choice):
    """The similarity losses (see the module docstring): MEAL v1's `method.similarity`."""

    ce = "ce"
    l1 = "l1"
    l2 = "l2"
    l1_soft = "l1_soft"
    l2_soft = "l2_soft"
    kl = "kl"


SIMILARITY_KINDS: tuple[str, ...] = Similarity.values()
"""The accepted values of ``kind`` in :func:`similarity_loss`."""

_SOFTMAX_KINDS = frozenset({"ce", "l1_soft", "l2_soft", "kl"})


def check_similarity_kind(kind: str) -> str:
    """Return ``kind`` if it names a similarity loss, else raise :class:`ConfigError`."""
    if kind not in SIMILARITY_KINDS:
        raise ConfigError(
            "method.similarity",
            f"unknown similarity loss {kind!r}",
            f"use one of {', '.join(SIMILARITY_KINDS)}",
        )
    return kind


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError("method.temperature", f"temperature must be > 0, got {temperature!r}", "use e.g. 1.0")


def _check_pair(student: Tensor, target: Tensor, *, two_d: bool) -> None:
    if student.shape != target.shape:
        raise ValueError(
            f"student and teacher outputs differ in shape: {tuple(student.shape)} vs {tuple(target.shape)}"
        )
    if two_d and student.dim() != 2:
        raise ValueError(f"expected a 2-d (batch, classes) tensor, got shape {tuple(student.shape)}")


def similarity_loss(student: Tensor, teacher: Tensor, kind: str, temperature: float = 1.0) -> Tensor:
    """Distance between a student output and the matching teacher output.

    Args:
        student: student output ``(B, D)`` (any shape for ``l1``/``l2``).
        teacher: teacher output of the same shape; detached here.
        kind: one of :data:`SIMILARITY_KINDS` (see the module docstring).
        temperature: softmax temperature ``tau`` for ``ce``, ``kl``, ``l1_soft``
            and ``l2_soft``; ignored by ``l1`` and ``l2``. ``1.0`` reproduces the
            published MEAL losses.

    Returns:
        A 0-dim tensor.

    Raises:
        ConfigError: unknown ``kind`` (key ``method.similarity``) or
            non-positive ``temperature`` (key ``method.temperature``).
        ValueError: the two tensors differ in shape, or a softmax-based kind
            gets a tensor that is not 2-d.
    """
    check_similarity_kind(kind)
    _check_temperature(temperature)
    teacher = teacher.detach()
    _check_pair(student, teacher, two_d=kind in _SOFTMAX_KINDS)
    if kind == "l1":
        return F.l1_loss(student, teacher)
    if kind == "l2":
        return F.mse_loss(student, teacher)
    if kind == "l1_soft":
        return F.l1_loss(F.softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1))
    if kind == "l2_soft":
        return F.mse_loss(F.softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1))
    target = F.softmax(teacher / temperature, dim=1)
    if kind == "ce":
        return soft_cross_entropy(student, target, temperature)
    return kl_to_probs(student, target, temperature)


def soft_cross_entropy(student_logits: Tensor, target_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """Soft cross-entropy towards a probability target, averaged over rows.

    ``mean_b( -sum_k p[b, k] * log_softmax(S[b] / tau)_k )``. No ``tau**2``
    factor is applied. ``target_probs`` (e.g. the mean of the teachers'
    softmaxes in MEAL V2) is detached.

    Args:
        student_logits: ``(B, K)`` student logits.
        target_probs: ``(B, K)`` probabilities (rows summing to 1).
        temperature: softmax temperature applied to the student logits.

    Returns:
        A 0-dim tensor.
    """
    _check_temperature(temperature)
    target_probs = target_probs.detach()
    _check_pair(student_logits, target_probs, two_d=True)
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    return -(target_probs * log_q).sum(dim=1).mean()


def kl_to_probs(student_logits: Tensor, target_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(p || softmax(S / tau)) * tau**2``, summed over classes, averaged over rows.

    Zero target probabilities contribute 0 (``0 * log 0 = 0``). ``target_probs``
    is detached. The gradient with respect to the student equals that of
    :func:`soft_cross_entropy` times ``tau**2`` (the two differ by the target's
    entropy, a constant).

    Args:
        student_logits: ``(B, K)`` student logits.
        target_probs: ``(B, K)`` probabilities (rows summing to 1).
        temperature: softmax temperature applied to the student logits.

    Returns:
        A 0-dim tensor.
    """
    _check_temperature(temperature)
    target_probs = target_probs.detach()
    _check_pair(student_logits, target_probs, two_d=True)
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    per_row = (torch.xlogy(target_probs, target_probs) - target_probs * log_q).sum(dim=1)
    return per_row.mean() * (temperature**2)


def weighted_similarity_loss(
    students: Sequence[Tensor],
    teachers: Sequence[Tensor],
    weights: Sequence[float],
    kind: str,
    temperature: float = 1.0,
) -> Tensor:
    """``sum_i weights[i] * similarity_loss(students[i], teachers[i], kind, temperature)``.

    This is MEAL's ``L_sim`` over the selected blocks (``weights`` = ``gamma``).
    The three sequences must have the same, non-zero length.
    """
    if not (len(students) == len(teachers) == len(weights)) or len(students) == 0:
        raise ValueError(
            f"need as many student outputs ({len(students)}), teacher outputs ({len(teachers)}) "
            f"and weights ({len(weights)}), at least one"
        )
    total = students[0].new_zeros(())
    for s, t, w in zip(students, teachers, weights, strict=True):
        total = total + w * similarity_loss(s, t, kind, temperature)
    return total
