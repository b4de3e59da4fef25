"""FitNets-style hint distillation (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015; `method=fitnets`).

A regressor maps a hidden block of the student (the *guided* block) to the shape of the teachers' hidden
block (the *hint* block), and an L2 loss pulls the two together. Here it is one single-stage loss:

``L = ce_weight * CE(S, y) + kd_weight * tau**2 * KL(p || softmax(S / tau)) + hint_weight * H``

with ``S`` the student's logits, ``p = mean_t softmax(T_t / tau)`` the teachers' mean softmax at temperature
``tau`` and

``H = mean over pairs i of MSE(r_i(s_i), mean_t h_{t,i})``

where ``s_i`` is the student's block ``guided_layer[i]``, ``h_{t,i}`` teacher ``t``'s block ``hint_layer[i]``
and ``r_i`` the pair's regressor: for feature maps ``(B, C, H, W)`` a bias-free 1x1 convolution from the
student's channels to the teachers' followed by BatchNorm, for vectors ``(B, N)`` a linear layer. Before the
loss, every map of a pair (the regressed student map and each teacher's) is average-pooled
(``adaptive_avg_pool2d``) to the smallest height and width among them; MSE averages over all elements.
Block indices count the models' block outputs, its taps then the logits (as MEAL v1's `out_layer`), negative
from the end: the default ``-2`` is the last tap.

The regressors learn with the student: they are in :meth:`FitNets.student_parameters` (the student's
optimizer, `optim=`, trains them) and :meth:`FitNets.data_parallel_modules`, and they are checkpointed as
part of the method's state. They are built when the method is, from the block shapes found by one forward of
a small zero input through each model (no gradients, eval mode; every module's mode is restored after).

The paper trains in two stages: first the student's layers up to the guided block against the hint alone,
then the whole student with KD. That schedule is not reproduced; the terms above are summed from the first
step. `kd_weight=1` adds the KD term of the paper's second stage.

The teachers' hint blocks are averaged, so they need the same number of channels (maps) or width
(vectors): one teacher, or teachers of one architecture. Soft labels are always computed online: the hint
term needs the teachers' hidden blocks, which the soft-label cache does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meal.config.ranges import ranged
from meal.config.schema import MethodConfig
from meal.data.batch import Batch
from meal.errors import ConfigError
from meal.methods.base import Method, StepOutput, Teacher
from meal.methods.components import frozen_input, frozen_mode, kl_to_probs, mean_teacher_probs, usable
from meal.methods.registry import register_method

#: input heights and widths tried, in order, to find a convolutional model's block shapes (its first layer
#: fixes the channels; the method config does not know the data's image size). Only the channels of maps and
#: the widths of vectors are used, and those do not depend on the size; 32 suits every zoo network, 224 the
#: torchvision models that accept only their ImageNet size.
PROBE_SIZES = (32, 224)
WEIGHTS = ("hint_weight", "ce_weight", "kd_weight")


@dataclass
class FitNetsMethodConfig(MethodConfig):
    """FitNets hints in one stage: label CE, optional KD, and MSE between regressed student and teacher blocks.

    `hint_weight` defaults to 1, the largest weight that did not cost accuracy on the quickstart (10k
    Fashion-MNIST images, 10 epochs, fmnist_tiny, the default hint on the last tap, two fmnist_cnn teachers):
    the hint MSE starts at about half the label CE (0.42 and 0.89 over the first epoch) and top-1 is 87.65%,
    against 87.79% for the labels alone (hint_weight=0); at 10 the hint dominates (80.37%), and at 100, the
    weight of CRD's FitNet baseline on convolutional maps, a shorter run diverged at the default LR.
    `kd_weight` defaults to 0, so that `method=fitnets` adds the hint alone to the labels (`method=kd` is the
    KD baseline; `kd_weight=1` adds it here).
    """

    name: str = "fitnets"
    hint_layer: list[int] = ranged(factory=lambda: [-2])  # teacher block indices; the bounds are checked per model
    guided_layer: list[int] = ranged(factory=lambda: [-2])  # student block indices, one per hint block
    hint_weight: float = ranged(1.0, ge=0)
    ce_weight: float = ranged(1.0, ge=0)
    kd_weight: float = ranged(0.0, ge=0)
    temperature: float = ranged(4.0, gt=0)


def resolve_indices(key: str, indices: Sequence[int], model: nn.Module, owner: str) -> list[int]:
    """Map (possibly negative) block indices of `model` to positions in its block outputs (taps + logits);
    an index out of range raises ConfigError naming ``key[i]``. A block may be named more than once."""
    n_outputs = len(model.tap_names) + 1
    blocks = []
    for i, index in enumerate(indices):
        if not -n_outputs <= index < n_outputs:
            raise ConfigError(
                f"{key}[{i}]",
                f"index {index} is out of range: {owner} has {n_outputs} block outputs ({n_outputs - 1} taps + logits)",
                f"use -{n_outputs}..{n_outputs - 1}",
            )
        blocks.append(index % n_outputs)
    return blocks


def _probe_inputs(model: nn.Module) -> list[Tensor]:
    """Small zero batches `model` may accept, on its device: vectors of the width of its first layer when that
    is linear (an MLP), then images with the channels of its first convolution and each of `PROBE_SIZES`."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    vectors = [torch.zeros(2, first.in_features, device=device)] if isinstance(first, nn.Linear) else []
    channels = conv.in_channels if conv is not None else 3
    return [*vectors, *(torch.zeros(2, channels, size, size, device=device) for size in PROBE_SIZES)]


def block_shapes(model: nn.Module, blocks: Sequence[int]) -> list[tuple[int, ...]] | None:
    """The shapes (without the batch) of `model`'s block outputs `blocks`, from one forward of a probe input
    without gradients in eval mode; every module's train/eval mode is restored. None when no probe input runs."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        for x in _probe_inputs(model):
            try:
                with torch.no_grad():
                    outputs = model.forward_with_taps(frozen_input(model, x))
            except ConfigError:
                raise
            except Exception:  # the model does not run on this size: try the next
                continue
            return [tuple(outputs[b].shape[1:]) for b in blocks]
        return None
    finally:
        for module, mode in modes:
            module.training = mode


def _kind(shape: tuple[int, ...]) -> str:
    return {1: "vector", 3: "map"}.get(len(shape), "")


@dataclass
class HintPlan:
    """The resolved hint pairs: block positions (the student's, each teacher's) and the blocks' shapes."""

    guided_blocks: list[int]
    hint_blocks: list[list[int]]  # per teacher: its models may have different numbers of taps
    student_shapes: list[tuple[int, ...]] | None
    hint_shapes: list[tuple[int, ...]] | None


def plan_hints(cfg: Any, student: nn.Module, teachers: Sequence[tuple[str, nn.Module]], strict: bool) -> HintPlan:
    """Check the block indices and shapes of every hint pair; raise ConfigError naming the key.

    Each guided block must be a map or a vector like its hint block, and every teacher's hint block have the
    same number of channels (maps) or the same width (vectors). `strict` (models with real weights): a model
    whose block shapes cannot be found is an error; otherwise (meta models) its shape checks are left to the
    method's construction.
    """
    guided = resolve_indices("method.guided_layer", cfg.guided_layer, student, student.arch)
    hint = [
        resolve_indices("method.hint_layer", cfg.hint_layer, model, f"teacher '{name}' ({model.arch})")
        for name, model in teachers
    ]

    def shapes_of(model: nn.Module, blocks: list[int], owner: str, key: str) -> list[tuple[int, ...]] | None:
        shapes = block_shapes(model, blocks)
        if shapes is None and strict:
            tried = " or ".join(str(tuple(x.shape[1:])) for x in _probe_inputs(model))
            raise ConfigError(
                key, f"the block shapes of {owner} could not be found: it runs on no input of shape {tried}"
            )
        return shapes

    student_shapes = shapes_of(student, guided, student.arch, "method.guided_layer")
    for i, shape in enumerate(student_shapes or []):
        if not _kind(shape):
            raise ConfigError(
                f"method.guided_layer[{i}]",
                f"block {cfg.guided_layer[i]} of {student.arch} has shape {shape}: not a map (C, H, W) or a vector",
                "choose a block whose output is (B, C, H, W) or (B, N)",
            )
    hint_shapes, first_owner = None, None
    for (name, model), blocks in zip(teachers, hint):
        shapes = shapes_of(model, blocks, f"teacher '{name}' ({model.arch})", "method.hint_layer")
        if shapes is None:
            continue
        for i, shape in enumerate(shapes):
            if not _kind(shape):
                raise ConfigError(
                    f"method.hint_layer[{i}]",
                    f"block {cfg.hint_layer[i]} of teacher '{name}' ({model.arch}) has shape {shape}: "
                    "not a map (C, H, W) or a vector",
                    "choose a block whose output is (B, C, H, W) or (B, N)",
                )
            first = shape if hint_shapes is None else hint_shapes[i]
            if _kind(shape) != _kind(first) or shape[0] != first[0]:
                raise ConfigError(
                    f"method.hint_layer[{i}]",
                    f"block {cfg.hint_layer[i]} is {first} in {first_owner} and {shape} in teacher "
                    f"'{name}' ({model.arch}): the teachers' hint blocks are averaged, so they need the same "
                    "channels (maps) or width (vectors)",
                    "use one teacher or teachers of one architecture (several seeds), or another hint block",
                )
        if hint_shapes is None:
            hint_shapes, first_owner = shapes, f"teacher '{name}' ({model.arch})"
    if student_shapes is not None and hint_shapes is not None:
        for i, (s, t) in enumerate(zip(student_shapes, hint_shapes)):
            if _kind(s) != _kind(t):
                raise ConfigError(
                    f"method.guided_layer[{i}]",
                    f"block {cfg.guided_layer[i]} of {student.arch} is a {_kind(s)} {s} but the teachers' hint "
                    f"block {cfg.hint_layer[i]} is a {_kind(t)} {t}",
                    "pair a map with a map and a vector with a vector",
                )
    return HintPlan(guided, hint, student_shapes, hint_shapes)


class HintRegressor(nn.Module):
    """One regressor per hint pair, from the student's guided block to the teachers' hint block.

    Maps: a bias-free 1x1 convolution from the student's channels to the teachers', then BatchNorm.
    Vectors: a linear layer. Called with the guided blocks, it returns the regressed blocks.
    """

    def __init__(self, student_shapes: Sequence[tuple[int, ...]], hint_shapes: Sequence[tuple[int, ...]]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for s, t in zip(student_shapes, hint_shapes, strict=True):
            if len(s) == 3:
                layers.append(nn.Sequential(nn.Conv2d(s[0], t[0], kernel_size=1, bias=False), nn.BatchNorm2d(t[0])))
            else:
                layers.append(nn.Linear(s[0], t[0]))
        self.layers = nn.ModuleList(layers)

    def forward(self, guided: Sequence[Tensor]) -> list[Tensor]:
        """The regressed guided blocks, in pair order."""
        return [layer(x) for layer, x in zip(self.layers, guided, strict=True)]


def hint_mse(regressed: Tensor, hints: Sequence[Tensor]) -> Tensor:
    """MSE between a regressed student block and the mean of the teachers' hint blocks (float32).

    Maps are average-pooled to the smallest height and width among them first."""
    regressed = regressed.float()
    if regressed.dim() == 4:
        height = min(t.shape[-2] for t in (regressed, *hints))
        width = min(t.shape[-1] for t in (regressed, *hints))

        def pool(t: Tensor) -> Tensor:
            return t if tuple(t.shape[-2:]) == (height, width) else F.adaptive_avg_pool2d(t, (height, width))

        regressed, hints = pool(regressed), [pool(t) for t in hints]
    target = torch.stack([t.float() for t in hints]).mean(dim=0)
    return F.mse_loss(regressed, target)


@register_method
class FitNets(Method):
    """Label CE, optional KD, and hints: MSE between regressed student blocks and the teachers' mean blocks."""

    name = "fitnets"
    schema = FitNetsMethodConfig

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """One guided block per hint block, and a loss with at least one weighted term (the weights' and the
        temperature's ranges are the schema's: negative weights are refused there)."""
        if len(cfg.hint_layer) == 0:
            raise ConfigError("method.hint_layer", "is empty", "select at least one teacher block, e.g. [-2]")
        if len(cfg.guided_layer) != len(cfg.hint_layer):
            raise ConfigError(
                "method.guided_layer",
                f"has {len(cfg.guided_layer)} values but method.hint_layer has {len(cfg.hint_layer)}",
                "give one student block per hint block",
            )
        if all(float(getattr(cfg, k)) == 0 for k in WEIGHTS):
            raise ConfigError(
                "method.hint_weight",
                "hint_weight, ce_weight and kd_weight are all 0: the loss would be 0",
                "give at least one term a positive weight, e.g. method.hint_weight=1",
            )

    @classmethod
    def check_models(cls, cfg: Any, student: nn.Module, teachers: Sequence[tuple[str, nn.Module]]) -> None:
        """The block indices within the student's and every teacher's block outputs, maps paired with maps and
        vectors with vectors, and the teachers' hint blocks alike (so that they can be averaged)."""
        plan_hints(cfg, student, teachers, strict=False)

    def __init__(
        self, cfg: Any, student: nn.Module, teachers: Sequence[Teacher], num_classes: int, seed: int = 0
    ) -> None:
        super().__init__(cfg, student, teachers, num_classes, seed)
        if not teachers:
            raise ConfigError("teachers", "method 'fitnets' needs at least one teacher")
        self.check_config(cfg)
        self.hint_weight, self.ce_weight, self.kd_weight = (float(getattr(cfg, k)) for k in WEIGHTS)
        self.temperature = float(cfg.temperature)
        plan = plan_hints(cfg, student, [(t.name, t.model) for t in teachers], strict=True)
        self.guided_blocks, self.hint_blocks = plan.guided_blocks, plan.hint_blocks
        # with hint_weight 0 the hint term is left out and no regressor is built: none sits in the optimizer,
        # or in a replica that would wait for gradients that never come
        self.regressor = HintRegressor(plan.student_shapes, plan.hint_shapes) if self.hint_weight > 0 else None
        self.student_taps = any(b != len(student.tap_names) for b in self.guided_blocks)
        self.teacher_taps = [
            any(b != len(t.model.tap_names) for b in blocks) for t, blocks in zip(teachers, self.hint_blocks)
        ]

    def student_parameters(self) -> list[nn.Parameter]:
        """The student's parameters and the regressors': both learn with the student's optimizer."""
        own = [] if self.regressor is None else list(self.regressor.parameters())
        return [*self.student.parameters(), *own]

    def data_parallel_modules(self) -> list[nn.Module]:
        """The student and the regressors."""
        return [self.student] if self.regressor is None else [self.student, self.regressor]

    def may_leave_student_parameters_unused(self) -> bool:
        """True when neither CE nor KD is weighted and no guided block is the logits: the layers after the last
        guided block then get no gradient."""
        logits_block = len(self.student.tap_names)
        return self.ce_weight == 0 and self.kd_weight == 0 and logits_block not in self.guided_blocks

    def _student_outputs(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The student's logits and its guided blocks."""
        student = self.replica(self.student)
        if self.regressor is None or not self.student_taps:
            logits = student(x)
            return logits, [logits] * len(self.guided_blocks)
        # a replica runs the taps through its own forward, so that the reducer sees the step
        outputs = self.student.forward_with_taps(x) if student is self.student else student(x, with_taps=True)
        return outputs[-1], [outputs[b] for b in self.guided_blocks]

    def teacher_outputs(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        """Each teacher's logits, and per hint pair the teachers' hint blocks (none without a hint term); float32
        tensors usable in losses."""
        hinted = self.regressor is not None
        logits, blocks = [], []
        with frozen_mode(x.device.type):
            for model, hint_blocks, taps in zip(self.teacher_models(), self.hint_blocks, self.teacher_taps):
                xt = frozen_input(model, x)
                outputs = model.forward_with_taps(xt) if hinted and taps else [model(xt)]
                logits.append(usable(outputs[-1]))
                if hinted:
                    blocks.append([usable(outputs[b]) if taps else logits[-1] for b in hint_blocks])
        return logits, [list(pair) for pair in zip(*blocks)]

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        """``ce_weight * CE + kd_weight * tau^2 * KL + hint_weight * mean over pairs of MSE`` for one batch."""
        logits, guided = self._student_outputs(batch.x)
        logits = logits.float()
        terms: list[Tensor] = []
        logs: dict[str, float | Tensor] = {}
        if self.ce_weight > 0:
            ce = F.cross_entropy(logits, batch.y)
            terms.append(self.ce_weight * ce)
            logs["ce"] = ce.detach()
        if self.kd_weight > 0 or self.regressor is not None:
            teacher_logits, hints = self.teacher_outputs(batch.x)
            if self.kd_weight > 0:
                kl = kl_to_probs(logits, mean_teacher_probs(teacher_logits, self.temperature), self.temperature)
                terms.append(self.kd_weight * kl)
                logs["kd_kl"] = kl.detach()
            if self.regressor is not None:
                regressed = self.replica(self.regressor)(guided)
                pairs = [hint_mse(r, h) for r, h in zip(regressed, hints, strict=True)]
                hint = torch.stack(pairs).mean()
                terms.append(self.hint_weight * hint)
                logs["hint"] = hint.detach()
                if len(pairs) > 1:
                    logs |= {f"hint_pair{i}": p.detach() for i, p in enumerate(pairs)}
        return StepOutput(torch.stack(terms).sum(), logs)
