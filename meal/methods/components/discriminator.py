"""Block discriminators and their losses.

A discriminator sees one feature vector of length ``D`` (an aligned block
output or logits) and outputs two logits. Three linear layers (the paper's 1x1
convolutions on a ``(D, 1, 1)`` map, which are the same function):
``D -> D//K -> D//K**2 -> 2`` with ReLU between them.

Hidden-width floor: each hidden width is ``max(D // K**i, min_hidden)``. With
the MEAL V2 factor ``K = 8`` and 10 classes the plain sizes would be
``10 -> 1 -> 0 -> 2``, a zero-width layer; with ``min_hidden >= 1`` the floor
keeps every layer non-empty (``10 -> 1 -> 1 -> 2`` for ``min_hidden=1``). Where
the plain sizes are all positive (e.g. ImageNet, ``1000 -> 125 -> 15 -> 2``)
the floor of 1 changes nothing.

``final_relu=True`` adds a ReLU after the last layer, which the published code
has (it clips negative logits before BCE-with-logits, so a row can never be
scored below probability 0.5). It is off by default and kept only for exact
reproduction.

Labels: student rows ``[1, 0]``, teacher rows ``[0, 1]``. The losses use
``BCEWithLogits`` with mean reduction over all ``rows x 2`` logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meal.errors import ConfigError
from meal.methods.components.grl import grad_reverse


class Discriminator(nn.Module):
    """Three-layer MLP ``D -> max(D//K, m) -> max(D//K**2, m) -> 2``.

    Args:
        in_dim: input length ``D``.
        K: width reduction factor (2 in MEAL, 8 in MEAL V2).
        final_relu: apply ReLU to the output logits (published defect).
        min_hidden: floor ``m`` on the hidden widths (see the module docstring).

    Attributes:
        fc1, fc2, fc3: the ``nn.Linear`` layers.
        widths: ``(D, h1, h2, 2)``.
    """

    def __init__(
        self,
        in_dim: int,
        K: int = 2,  # noqa: N803 - the paper's name for the reduction factor
        final_relu: bool = False,
        min_hidden: int = 1,
    ) -> None:
        super().__init__()
        if in_dim < 1:
            raise ConfigError("method.out_dims", f"discriminator input length must be >= 1, got {in_dim}")
        if K < 1:
            raise ConfigError("method.K", f"must be >= 1, got {K}")
        if min_hidden < 1:
            raise ConfigError(
                "method.d_min_hidden",
                f"must be >= 1, got {min_hidden}",
                "a zero-width hidden layer cannot carry any signal",
            )
        h1 = max(in_dim // K, min_hidden)
        h2 = max(in_dim // K**2, min_hidden)
        self.in_dim = in_dim
        self.K = K
        self.final_relu = final_relu
        self.min_hidden = min_hidden
        self.widths: tuple[int, int, int, int] = (in_dim, h1, h2, 2)
        self.fc1 = nn.Linear(in_dim, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, 2)

    def forward(self, x: Tensor) -> Tensor:
        """Classify each row of ``x`` ``(N, D)``; returns ``(N, 2)`` logits."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected input (N, {self.in_dim}), got {tuple(x.shape)}")
        out = F.relu(self.fc1(x))
        out = F.relu(self.fc2(out))
        out = self.fc3(out)
        if self.final_relu:
            out = F.relu(out)
        return out

    def extra_repr(self) -> str:
        """Summary shown by ``print(module)``."""
        return f"widths={self.widths}, K={self.K}, final_relu={self.final_relu}"


def _labels(n_student: int, n_teacher: int, ref: Tensor) -> Tensor:
    eye = torch.eye(2, dtype=ref.dtype, device=ref.device)  # made on the device: no copy from the host
    return torch.cat([eye[0].expand(n_student, 2), eye[1].expand(n_teacher, 2)], dim=0)


def discriminator_loss(
    d: Discriminator,
    student_feat: Tensor,
    teacher_feat: Tensor,
    detach_student: bool = False,
    grl_scale: float | None = None,
) -> Tensor:
    """BCE-with-logits of ``d`` telling student rows from teacher rows.

    Student ``(B, D)`` then teacher ``(B', D)`` rows are stacked to
    ``(B + B', D)``; each row is classified on its own against student
    ``[1, 0]`` / teacher ``[0, 1]``, and the loss is the mean over all
    ``(B + B') * 2`` logits. The teacher features are detached.

    Args:
        d: the discriminator.
        student_feat: student features (gradient flows into them unless detached).
        teacher_feat: teacher features (constants).
        detach_student: detach the student features too (the discriminator step
            of alternating training).
        grl_scale: if given, pass the student features through
            :func:`~meal.methods.components.grl.grad_reverse` with this scale, so
            that minimising this loss trains the discriminator while the student
            receives the reversed (adversarial) gradient.

    Returns:
        A 0-dim tensor.
    """
    if student_feat.dim() != 2 or teacher_feat.dim() != 2 or student_feat.shape[1] != teacher_feat.shape[1]:
        raise ValueError(
            "student and teacher features must be (B, D) with the same D, got "
            f"{tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}"
        )
    s = student_feat.detach() if detach_student else student_feat
    if grl_scale is not None:
        s = grad_reverse(s, grl_scale)
    stacked = torch.cat([s, teacher_feat.detach()], dim=0)
    logits = d(stacked)
    target = _labels(s.shape[0], teacher_feat.shape[0], logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def generator_loss(d: Discriminator, student_feat: Tensor) -> Tensor:
    """Non-saturating generator loss: student rows scored against the teacher label ``[0, 1]``.

    The mean BCE-with-logits over the ``B * 2`` logits of ``d(student_feat)``.
    Minimising it trains the student to look like a teacher; ``d`` should not
    be stepped on this loss (e.g. only the student's optimizer steps).

    Returns:
        A 0-dim tensor.
    """
    if student_feat.dim() != 2:
        raise ValueError(f"student features must be (B, D), got {tuple(student_feat.shape)}")
    logits = d(student_feat)
    target = _labels(0, student_feat.shape[0], logits)
    return F.binary_cross_entropy_with_logits(logits, target)
