"""MEAL (v1): block-wise adversarial distillation from an ensemble of teachers (`method=meal_v1`).

Per step: pick one teacher at random (or average all), take the selected block outputs (`out_layer`)
of student and teacher, align each to `out_dims[i]` by adaptive pooling, and minimise
``sum_i gamma_i * d(S_i, T_i)`` plus, per block, a discriminator term weighted by `eta_i` (see
:mod:`meal.methods.adversarial` for the modes). Hard labels are never used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from meal.data.batch import Batch
from meal.errors import ConfigError
from meal.methods.adversarial import adversarial_loss, build_discriminators, discriminator_optimizer
from meal.methods.base import ExtraOptimizer, Method, StepOutput, Teacher
from meal.methods.components import TeacherSelector, align, frozen_input, frozen_mode, similarity_loss, usable


def resolve_blocks(out_layer: Sequence[int], n_outputs: int, arch: str) -> list[int]:
    """Map (possibly negative) `out_layer` indices to block positions, rejecting out-of-range ones and any
    two indices that name the same block (e.g. -1 and the last index), which would distil it twice."""
    blocks: list[int] = []
    for i, index in enumerate(out_layer):
        if not -n_outputs <= index < n_outputs:
            raise ConfigError(
                f"method.out_layer[{i}]",
                f"index {index} is out of range: {arch} has {n_outputs} block outputs ({n_outputs - 1} taps + logits)",
                f"use -{n_outputs}..{n_outputs - 1}",
            )
        block = index % n_outputs
        if block in blocks:
            first = blocks.index(block)
            raise ConfigError(
                f"method.out_layer[{i}]",
                f"index {index} is block {block} of {arch}, already selected "
                f"by method.out_layer[{first}] ({out_layer[first]}): it would be distilled twice",
                "select each block once",
            )
        blocks.append(block)
    return blocks


class MealV1(Method):
    """Block-wise similarity + discriminators, one random teacher per step (as published)."""

    name = "meal_v1"

    def __init__(
        self, cfg: Any, student: nn.Module, teachers: Sequence[Teacher], num_classes: int, seed: int = 0
    ) -> None:
        super().__init__(cfg, student, teachers, num_classes, seed)
        n_outputs = len(student.tap_names) + 1
        self.blocks = resolve_blocks(cfg.out_layer, n_outputs, student.arch)
        for teacher in teachers:
            t_outputs = len(teacher.model.tap_names) + 1
            if t_outputs != n_outputs:
                raise ConfigError(
                    "method.out_layer",
                    f"teacher '{teacher.name}' has {t_outputs} block outputs and the student {n_outputs}",
                    "give both the same number of taps",
                )
        self.out_dims = [int(d) for d in cfg.out_dims]
        self.gammas = [float(g) for g in cfg.gamma]
        self.etas = [float(e) for e in cfg.eta]
        self.discriminators = build_discriminators(cfg, self.out_dims)
        self.selector = TeacherSelector(len(teachers), cfg.teacher_selection, seed=seed)
        self._extras = discriminator_optimizer(cfg, self.discriminators)
        self.needs_taps = any(b != n_outputs - 1 for b in self.blocks)

    def extra_optimizers(self) -> list[ExtraOptimizer]:
        """The discriminators' optimizer (none when `adversarial=none`)."""
        return self._extras

    def _outputs(self, model: nn.Module, x: Tensor) -> list[Tensor]:
        if self.needs_taps:
            outputs = model.forward_with_taps(x)
            return [outputs[b] for b in self.blocks]
        return [model(x)]

    def aligned(self, outputs: Sequence[Tensor]) -> list[Tensor]:
        """Align each selected block output to its `out_dims` length (float32)."""
        return [align(o.float(), d, self.cfg.pool) for o, d in zip(outputs, self.out_dims)]

    def teacher_targets(self, x: Tensor) -> list[Tensor]:
        """Aligned block outputs of the selected teacher(s), averaged when several."""
        chosen = self.selector.select()
        with frozen_mode(x.device.type):
            models = [self.teacher_list[i].model for i in chosen]
            per_teacher = [self.aligned(self._outputs(m, frozen_input(m, x))) for m in models]
            if len(per_teacher) == 1:
                targets = per_teacher[0]
            else:
                targets = [torch.stack(feats).mean(dim=0) for feats in zip(*per_teacher)]
        return [usable(t) for t in targets]

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        """Similarity + adversarial loss for one batch; labels are not used."""
        student = self.aligned(self._outputs(self.student, batch.x))
        teacher = self.teacher_targets(batch.x)
        sims = [similarity_loss(s, t, self.cfg.similarity, self.cfg.temperature) for s, t in zip(student, teacher)]
        sim_loss = sum(g * s for g, s in zip(self.gammas, sims))
        d_opt = self._extras[0].optimizer if self._extras else None
        adv, logs = adversarial_loss(self.cfg.adversarial, self.discriminators, student, teacher, self.etas, d_opt)
        logs = {"sim_loss": sim_loss.detach(), **logs}
        if len(sims) > 1:
            logs |= {f"sim_block{b}": s.detach() for b, s in zip(self.blocks, sims)}
        return StepOutput(sim_loss + adv, logs)

    def method_state(self) -> dict[str, Any]:
        """Discriminator weights plus the teacher selector's generator state."""
        return super().method_state() | {"_selector": self.selector.state_dict()}

    def load_method_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`method_state`."""
        state = dict(state)
        self.selector.load_state_dict(state.pop("_selector"))
        super().load_method_state(state)


METHOD = MealV1
