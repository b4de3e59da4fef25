"""MEAL V2: distil the ensemble's mean softmax, with one discriminator on the outputs (`method=meal_v2`).

Per step all teachers are used. The soft target is ``p = mean_i softmax(T_i / tau)`` (``tau`` =
`method.temperature`, default 1) and the student minimises

``L = d(S, p) + L_adv``

with ``d`` = `method.loss`: ``ce`` (soft cross-entropy ``-sum p * log_softmax(S / tau)``, the
published loss) or ``kl`` (``KL(p || softmax(S / tau)) * tau**2``, the same gradient scaled by
``tau**2``). **Hard labels are never used.**

``L_adv``: one discriminator (``K`` = 8, hidden widths floored at `d_min_hidden` so that 10-class
data works: 10 -> 4 -> 4 -> 2 by default) classifies each row of ``stack_batch(S, mean_i T_i)``
(student logits, then mean teacher logits) as student or teacher, with the modes of
:mod:`meal.methods.adversarial` (``grl`` by default). It has its own optimizer with LR `d_lr`; with
``d_schedule=constant`` (the default here) the student's schedule never touches it, with
``student`` it follows the student's schedule multiplier from its own base `d_lr` (the published
code overwrote it with the student's LR instead).

The targets come from the teachers on every step (`soft_labels=online`) or from a cache of the
ensemble's outputs (`soft_labels=cached`, see :mod:`meal.softlabels`).

CutMix (`cutmix` = probability per batch, `cutmix_alpha` = Beta parameter): a box of a shuffled copy
of the batch is pasted into each image. Online, the teachers see the mixed images (as published);
with cached targets, the target is the area-weighted mix of the two images' cached targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from meal.config.ranges import ranged
from meal.config.schema import AdversarialConfig, DiscriminatorSchedule, MethodConfig, SoftLabelConfig
from meal.core.choice import Choice
from meal.data.batch import Batch, to_device
from meal.errors import ConfigError
from meal.methods.adversarial import (
    adversarial_loss,
    build_discriminators,
    check_adversarial_options,
    discriminator_optimizer,
)
from meal.methods.base import ExtraOptimizer, Method, StepOutput, Teacher
from meal.methods.components import kl_to_probs, soft_cross_entropy
from meal.methods.registry import register_method
from meal.softlabels import SoftLabels


class MealV2Loss(Choice):
    """`method.loss`: soft cross-entropy to the ensemble's mean softmax (published) or the KL divergence."""

    ce = "ce"
    kl = "kl"


@dataclass
class MealV2MethodConfig(MethodConfig, AdversarialConfig, SoftLabelConfig):
    """MEAL V2: KL to the mean teacher softmax plus one discriminator on the outputs.

    `eta` defaults to 0.1: under gradient reversal 1 dominates the loss (Fashion-MNIST quickstart: 84.38%
    top-1 at 1, 87.54% with adversarial=none; experiments/README.md). The discriminator keeps its own LR
    (`d_schedule=constant`): the published code overwrote it with the student's.
    """

    name: str = "meal_v2"
    temperature: float = ranged(1.0, gt=0)
    eta: float = ranged(0.1, ge=0)
    loss: MealV2Loss = MealV2Loss.ce
    K: int = ranged(8, ge=1)
    d_min_hidden: int = ranged(4, ge=1)
    d_lr: float = ranged(1e-4, gt=0)
    d_weight_decay: float = ranged(0.0, ge=0)
    d_schedule: DiscriminatorSchedule = DiscriminatorSchedule.constant
    cutmix: float = ranged(0.0, ge=0, le=1)
    cutmix_alpha: float = ranged(1.0, gt=0)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box (y1, y2, x1, x2) covering about ``1 - lam`` of the image, centred at a uniform point."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y1, y2 = min(max(cy - ch // 2, 0), height), min(max(cy + ch // 2, 0), height)
    x1, x2 = min(max(cx - cw // 2, 0), width), min(max(cx + cw // 2, 0), width)
    return y1, y2, x1, x2


def cutmix(x: Tensor, alpha: float, rng: np.random.Generator) -> tuple[Tensor, Tensor, float]:
    """Paste a box of ``x[perm]`` into ``x``; returns the mixed batch, ``perm`` and the kept area ``lam``."""
    lam = float(rng.beta(alpha, alpha))
    perm = to_device(torch.from_numpy(rng.permutation(x.shape[0])), x.device)
    y1, y2, x1, x2 = cutmix_box(x.shape[-2], x.shape[-1], lam, rng)
    mixed = x.clone()
    mixed[:, :, y1:y2, x1:x2] = x[perm][:, :, y1:y2, x1:x2]
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (x.shape[-2] * x.shape[-1])
    return mixed, perm, lam


@register_method
class MealV2(Method):
    """Soft cross-entropy (or KL) to the mean teacher softmax plus one output discriminator."""

    name = "meal_v2"
    schema = MealV2MethodConfig
    supports_cached_soft_labels = True

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """The discriminators' betas (the choice keys' values and the ranges are the schema's)."""
        check_adversarial_options(cfg)

    def __init__(
        self, cfg: Any, student: nn.Module, teachers: Sequence[Teacher], num_classes: int, seed: int = 0
    ) -> None:
        super().__init__(cfg, student, teachers, num_classes, seed)
        self.check_config(cfg)
        if not teachers:
            raise ConfigError("teachers", "method 'meal_v2' needs at least one teacher")
        self.temperature = float(cfg.temperature)
        self.discriminators = build_discriminators(cfg, [num_classes])
        self._extras = discriminator_optimizer(cfg, self.discriminators)
        self.soft_labels = SoftLabels(cfg, teachers, self.temperature)
        self.rng = np.random.default_rng(seed)

    def data_parallel_modules(self) -> list[nn.Module]:
        """The student and the discriminator."""
        return [self.student, *self.discriminators]

    def extra_optimizers(self) -> list[ExtraOptimizer]:
        """The discriminator's optimizer (none when `adversarial=none`)."""
        return self._extras

    def prepare(self, data: Any, cfg: Any) -> None:
        """Open or build the soft-label cache when `soft_labels=cached`."""
        device = next(self.student.parameters()).device
        self.soft_labels.prepare(data, cfg, device)

    def distillation_loss(self, logits: Tensor, target_probs: Tensor) -> Tensor:
        """``d(S, p)``: soft cross-entropy or KL at the method's temperature."""
        if self.cfg.loss == "kl":
            return kl_to_probs(logits, target_probs, self.temperature)
        return soft_cross_entropy(logits, target_probs, self.temperature)

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        """Distillation + adversarial loss for one batch; `batch.y` is never read."""
        x, mix = batch.x, None
        p = float(self.cfg.cutmix)
        if p > 0 and (p >= 1.0 or self.rng.random() < p):
            x, perm, lam = cutmix(x, float(self.cfg.cutmix_alpha), self.rng)
            mix = (perm, lam)
        logits = self.replica(self.student)(x).float()
        targets = self.soft_labels.targets(batch, x)
        if mix is not None and self.soft_labels.mode == "cached":
            targets = targets.mix(*mix)
        kd = self.distillation_loss(logits, targets.probs)
        d_opt = self._extras[0].optimizer if self._extras else None
        discriminators = [self.replica(d) for d in self.discriminators]
        etas = [float(self.cfg.eta)]
        adv, logs = adversarial_loss(self.cfg.adversarial, discriminators, [logits], [targets.logits], etas, d_opt)
        return StepOutput(kd + adv, {"kd_loss": kd.detach(), **logs})

    def method_state(self) -> dict[str, Any]:
        """Discriminator weights plus the CutMix generator state."""
        return super().method_state() | {"_cutmix_rng": self.rng.bit_generator.state}

    def load_method_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`method_state`."""
        state = dict(state)
        rng_state = state.pop("_cutmix_rng", None)
        if rng_state is not None:
            self.rng.bit_generator.state = rng_state
        super().load_method_state(state)
