"""The discriminator side shared by MEAL v1 and MEAL V2.

Modes (`method.adversarial`):
- ``grl``: gradient reversal on the student's features. One backward: the discriminators minimise
  their classification loss, the student receives the negated gradient and so maximises it (a real
  min-max).
- ``joint``: the published code's behaviour, kept for exact reproduction: discriminators and student
  minimise the same summed loss in one backward, so the student helps the discriminator.
- ``alternating``: GAN-style: a discriminator step on detached features with its own optimizer, then a
  student step with the non-saturating generator loss (student rows labelled as teacher).
- ``none``: similarity losses only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from meal.config.choices import two_betas
from meal.core.optim import fused_optimizer
from meal.methods.base import ExtraOptimizer
from meal.methods.components import Discriminator, discriminator_loss, generator_loss


def check_adversarial_options(cfg: Any) -> None:
    """Check the discriminator options of :class:`meal.config.schema.AdversarialConfig` (before any work).

    The modes, optimizers and schedule policies are the schema's choice types (refused at composition).
    """
    two_betas("method.d_betas", cfg.d_betas)


def build_discriminators(cfg: Any, dims: Sequence[int]) -> nn.ModuleList:
    """One discriminator per aligned feature length (empty when adversarial is none)."""
    if cfg.adversarial == "none":
        return nn.ModuleList()
    return nn.ModuleList(
        Discriminator(int(d), K=int(cfg.K), final_relu=bool(cfg.d_final_relu), min_hidden=int(cfg.d_min_hidden))
        for d in dims
    )


def discriminator_optimizer(cfg: Any, discriminators: nn.ModuleList) -> list[ExtraOptimizer]:
    """The discriminators' own optimizer, LR `d_lr` and schedule policy `d_schedule`."""
    params = list(discriminators.parameters())
    if not params:
        return []
    if cfg.d_optim == "sgd":
        optimizer = fused_optimizer(
            torch.optim.SGD, params, lr=cfg.d_lr, momentum=cfg.d_momentum, weight_decay=cfg.d_weight_decay
        )
    else:
        optimizer = fused_optimizer(
            torch.optim.AdamW, params, lr=cfg.d_lr, betas=tuple(cfg.d_betas), weight_decay=cfg.d_weight_decay
        )
    return [
        ExtraOptimizer(
            "discriminators",
            optimizer,
            float(cfg.d_lr),
            follow_schedule=cfg.d_schedule == "student",
            stepped_by_engine=cfg.adversarial != "alternating",
        )
    ]


def adversarial_loss(
    mode: str,
    discriminators: Sequence[nn.Module],
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    etas: Sequence[float],
    d_optimizer: torch.optim.Optimizer | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The adversarial term to add to the student's loss, and the scalars to log.

    In ``alternating`` mode this also performs the discriminator update (on detached features).
    """
    zero = student_feats[0].new_zeros(())
    if mode == "none" or len(discriminators) == 0:
        return zero, {}
    pairs = list(zip(discriminators, student_feats, teacher_feats, etas))
    if mode == "alternating":
        assert d_optimizer is not None
        d_optimizer.zero_grad(set_to_none=True)
        d_loss = sum(eta * discriminator_loss(d, s, t, detach_student=True) for d, s, t, eta in pairs)
        d_loss.backward()
        d_optimizer.step()
        g_loss = sum(eta * generator_loss(d, s) for d, s, _, eta in pairs)
        d_optimizer.zero_grad(set_to_none=True)
        return g_loss, {"d_loss": d_loss.detach(), "adv_loss": g_loss.detach()}
    scale = 1.0 if mode == "grl" else None
    d_loss = sum(eta * discriminator_loss(d, s, t, grl_scale=scale) for d, s, t, eta in pairs)
    value = d_loss.detach()
    return d_loss, {"d_loss": value, "adv_loss": -value if mode == "grl" else value}
