"""MEAL (v1): block-wise adversarial distillation from an ensemble of teachers (`method=meal_v1`).

Per step: pick one teacher at random (or average all), take the selected block outputs (`out_layer`)
of student and teacher, align each to `out_dims[i]` by adaptive pooling, and minimise
``sum_i gamma_i * d(S_i, T_i)`` plus, per block, a discriminator term weighted by `eta_i` (see
:mod:`meal.methods.adversarial` for the modes). Hard labels are never used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from meal.config.ranges import ranged
from meal.config.schema import AdversarialConfig, MethodConfig
from meal.data.batch import Batch
from meal.errors import ConfigError
from meal.methods.adversarial import (
    adversarial_loss,
    build_discriminators,
    check_adversarial_options,
    discriminator_optimizer,
)
from meal.methods.base import ExtraOptimizer, Method, StepOutput, Teacher
from meal.methods.components import (
    Pool,
    Similarity,
    TeacherSelection,
    TeacherSelector,
    align,
    frozen_input,
    frozen_mode,
    similarity_loss,
    usable,
)
from meal.methods.registry import register_method


@dataclass
class MealV1MethodConfig(MethodConfig, AdversarialConfig):
    """MEAL (v1): block-wise similarity losses and one discriminator per selected block.

    `eta` defaults to 0.1, not the published 1: under gradient reversal (the default `adversarial=grl`) the
    student ascends the discriminator's loss, which has no upper bound, and at 1 that term dominates
    (Fashion-MNIST quickstart: 84.49% top-1 at eta 1, 87.51% at 0.1; experiments/README.md). The published
    objective (`adversarial=joint`) is stable at 1.
    """

    name: str = "meal_v1"
    out_layer: list[int] = ranged(factory=lambda: [-1])  # block indices; the student's bounds are checked
    out_dims: list[int] = ranged(factory=lambda: [10], ge=1)
    gamma: list[float] = ranged(factory=lambda: [1.0], ge=0)
    eta: list[float] = ranged(factory=lambda: [0.1], ge=0)
    similarity: Similarity = Similarity.ce
    temperature: float = ranged(1.0, gt=0)
    pool: Pool = Pool.avg
    teacher_selection: TeacherSelection = TeacherSelection.random
    epochs_per_teacher: bool = False


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


def _check_block_lists(cfg: Any) -> None:
    """One out_dims, gamma and eta value per selected block, no block twice."""
    lengths = {k: len(getattr(cfg, k)) for k in ("out_layer", "out_dims", "gamma", "eta")}
    if lengths["out_layer"] == 0:
        raise ConfigError("method.out_layer", "is empty", "select at least one block, e.g. [-1] for the logits")
    for key in ("out_dims", "gamma", "eta"):
        if lengths[key] != lengths["out_layer"]:
            raise ConfigError(
                f"method.{key}",
                f"has {lengths[key]} values but method.out_layer has {lengths['out_layer']}",
                "give one value per selected block",
            )
    if len(set(cfg.out_layer)) != len(cfg.out_layer):
        raise ConfigError("method.out_layer", f"repeats a block: {list(cfg.out_layer)}")


@register_method
class MealV1(Method):
    """Block-wise similarity + discriminators, one random teacher per step (as published)."""

    name = "meal_v1"
    schema = MealV1MethodConfig

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """The block lists and the discriminators' betas (the choice keys are the schema's types)."""
        _check_block_lists(cfg)
        check_adversarial_options(cfg)

    @classmethod
    def check_models(cls, cfg: Any, student: nn.Module, teachers: Sequence[tuple[str, nn.Module]]) -> None:
        """`out_layer` within the student's block outputs; every teacher with as many block outputs."""
        n_outputs = len(student.tap_names) + 1
        resolve_blocks(cfg.out_layer, n_outputs, student.arch)
        for name, model in teachers:
            t_outputs = len(model.tap_names) + 1
            if t_outputs != n_outputs:
                raise ConfigError(
                    "method.out_layer",
                    f"teacher '{name}' has {t_outputs} block outputs and the student {n_outputs}",
                    "give both the same number of taps",
                )

    @classmethod
    def schedule_stretch(cls, cfg: Any, n_teachers: int) -> int:
        """`epochs_per_teacher`: the run is (number of teachers) times longer."""
        return max(n_teachers, 1) if cfg.epochs_per_teacher else 1

    def __init__(
        self, cfg: Any, student: nn.Module, teachers: Sequence[Teacher], num_classes: int, seed: int = 0
    ) -> None:
        super().__init__(cfg, student, teachers, num_classes, seed)
        self.check_models(cfg, student, [(t.name, t.model) for t in teachers])
        n_outputs = len(student.tap_names) + 1
        self.blocks = resolve_blocks(cfg.out_layer, n_outputs, student.arch)
        self.out_dims = [int(d) for d in cfg.out_dims]
        self.gammas = [float(g) for g in cfg.gamma]
        self.etas = [float(e) for e in cfg.eta]
        self.discriminators = build_discriminators(cfg, self.out_dims)
        self.selector = TeacherSelector(len(teachers), cfg.teacher_selection, seed=seed)
        self._extras = discriminator_optimizer(cfg, self.discriminators)
        self.needs_taps = any(b != n_outputs - 1 for b in self.blocks)

    def data_parallel_modules(self) -> list[nn.Module]:
        """The student and the discriminators."""
        return [self.student, *self.discriminators]

    def may_leave_student_parameters_unused(self) -> bool:
        """True when no selected block is the logits: the layers after the last selected block get no gradient."""
        return len(self.student.tap_names) not in self.blocks

    def extra_optimizers(self) -> list[ExtraOptimizer]:
        """The discriminators' optimizer (none when `adversarial=none`)."""
        return self._extras

    def _outputs(self, model: nn.Module, x: Tensor) -> list[Tensor]:
        if self.needs_taps:
            outputs = model.forward_with_taps(x)
            return [outputs[b] for b in self.blocks]
        return [model(x)]

    def _student_outputs(self, x: Tensor) -> list[Tensor]:
        student = self.replica(self.student)
        if not self.needs_taps:
            return [student(x)]
        # a replica runs the taps through its own forward, so that the reducer sees the step
        outputs = self.student.forward_with_taps(x) if student is self.student else student(x, with_taps=True)
        return [outputs[b] for b in self.blocks]

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
        student = self.aligned(self._student_outputs(batch.x))
        teacher = self.teacher_targets(batch.x)
        sims = [similarity_loss(s, t, self.cfg.similarity, self.cfg.temperature) for s, t in zip(student, teacher)]
        sim_loss = sum(g * s for g, s in zip(self.gammas, sims))
        d_opt = self._extras[0].optimizer if self._extras else None
        discriminators = [self.replica(d) for d in self.discriminators]
        adv, logs = adversarial_loss(self.cfg.adversarial, discriminators, student, teacher, self.etas, d_opt)
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
