"""The interface between the training engine and a distillation method.

A method owns the student's training objective and any extra modules it trains (discriminators),
with their optimizers and LR policy. The engine knows nothing about MEAL: it asks the method for a
loss, back-propagates it, and steps the optimizers the method hands over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from meal.core.replica import RefuseDirectTrainingCall
from meal.core.teacher import Teacher
from meal.data.batch import Batch

__all__ = ["ExtraOptimizer", "Method", "StepOutput", "Teacher"]


@dataclass
class StepOutput:
    """What a training step returns: the loss to back-propagate and scalars to log.

    Log values may be detached 0-d tensors: the engine reads them all at once after the backward pass,
    so that a step waits for the device once rather than once per scalar in the middle of the forward.
    """

    loss: torch.Tensor
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)


@dataclass
class ExtraOptimizer:
    """An optimizer the method owns (e.g. its discriminators').

    `base_lr` is scaled by the student's schedule multiplier when `follow_schedule` is true and kept
    constant otherwise. The engine steps it after the backward pass when `stepped_by_engine` is true;
    methods that update these parameters in their own step (alternating GAN updates) set it false.
    """

    name: str
    optimizer: torch.optim.Optimizer
    base_lr: float
    follow_schedule: bool = True
    stepped_by_engine: bool = True


class Method(nn.Module):
    """Base class of every training method. Subclasses implement :meth:`training_step`.

    A subclass declares what the rest of meal needs to know about it, as class attributes and class
    methods, and registers itself with :func:`meal.methods.registry.register_method`.
    """

    #: the `method.name` that selects it
    name: ClassVar[str] = "base"
    #: its config schema: a dataclass extending :class:`meal.config.schema.MethodConfig`
    schema: ClassVar[type | None] = None
    #: whether runs load (or train) the teacher set
    uses_teachers: ClassVar[bool] = True
    #: whether `method.soft_labels=cached` can replay the ensemble's outputs (its schema then extends
    #: :class:`meal.config.schema.SoftLabelConfig`)
    supports_cached_soft_labels: ClassVar[bool] = False

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Check the method's options that need no model (e.g. list lengths); raise ConfigError.

        A choice key's allowed values are its schema's (a :class:`~meal.core.choice.Choice` type, refused
        at composition), its numeric ranges are declared in the schema (:mod:`meal.config.ranges`). Runs in
        :func:`meal.config.validate.validate`, before any data, model or file is touched.
        """

    @classmethod
    def check_models(cls, cfg: Any, student: nn.Module, teachers: Sequence[tuple[str, nn.Module]]) -> None:
        """Check the method's options against the student's and the teachers' structure; raise ConfigError.

        The models are built on the meta device from their architectures alone (no weights, no data), so
        this runs before any teacher is trained or loaded.
        """

    @classmethod
    def schedule_stretch(cls, cfg: Any, n_teachers: int) -> int:
        """How many times longer the run is than `trainer.epochs` (its LR schedule plays that much slower)."""
        return 1

    def __init__(
        self, cfg: Any, student: nn.Module, teachers: Sequence[Teacher], num_classes: int, seed: int = 0
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.student = student
        self.teacher_list = list(teachers)
        self.num_classes = num_classes
        self._replicas: dict[int, nn.Module] = {}  # id(module) -> its DistributedDataParallel wrapper

    def teacher_models(self) -> list[nn.Module]:
        """The frozen teacher networks (not registered as submodules: never saved or trained)."""
        return [t.model for t in self.teacher_list]

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        """Compute the loss for one batch at global step `step`."""
        raise NotImplementedError

    def prepare(self, data: Any, cfg: Any) -> None:
        """Called once after construction with the run's data bundle and full config (no-op here).

        Methods that need the training data or run paths before training (e.g. to open or build a
        soft-label cache) override it.
        """

    def extra_optimizers(self) -> list[ExtraOptimizer]:
        """Optimizers for the method's own modules (none by default)."""
        return []

    def student_parameters(self) -> list[nn.Parameter]:
        """What the student's optimizer (`optim=`) trains: the student's parameters and, in a method that
        adds trainable modules that learn with the student (e.g. a regressor on a hidden block), theirs."""
        return list(self.student.parameters())

    def data_parallel_modules(self) -> list[nn.Module]:
        """The modules a training step runs and trains: the student, and any module of the method's own that
        learns (its discriminators, a regressor). Under data parallelism each gets a DistributedDataParallel
        replica; the training step calls them through :meth:`replica`."""
        return [self.student]

    def may_leave_student_parameters_unused(self) -> bool:
        """Whether a step can leave some student parameters without a gradient (a loss on hidden blocks
        only); DistributedDataParallel then looks for such parameters after every backward pass."""
        return False

    def distribute(self, wrap: Callable[[nn.Module, bool], nn.Module]) -> None:
        """Give each of :meth:`data_parallel_modules` its replica `wrap(module, find_unused_parameters)` (the
        engine calls this when training on several processes). The modules themselves stay in place: their
        weights, checkpoints and evaluation are unchanged; a training forward that bypasses the replica would
        leave its gradients unsynchronised, so it is refused."""
        for module in self.data_parallel_modules():
            unused = module is self.student and self.may_leave_student_parameters_unused()
            replica = wrap(module, unused)
            if replica is not module:
                self._replicas[id(module)] = replica
                guard = RefuseDirectTrainingCall(replica)
                for part in (module, *module.children()):  # the children too: a TappedModel's net, say
                    part.register_forward_pre_hook(guard)

    def replica(self, module: nn.Module) -> nn.Module:
        """What a training step calls to run `module` (the student or one of the method's own modules): its
        DistributedDataParallel replica when training on several processes, else the module itself."""
        return self._replicas.get(id(module), module)

    def method_state(self) -> dict[str, Any]:
        """Everything to checkpoint besides the student: own modules and generator states."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("student.")}

    def load_method_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`method_state`."""
        own = {k: v for k, v in state.items() if not k.startswith("student.")}
        missing, unexpected = self.load_state_dict(own, strict=False)
        missing = [k for k in missing if not k.startswith("student.")]
        if missing or unexpected:
            raise KeyError(f"method state mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")

    def train(self, mode: bool = True) -> Method:
        """Train the student and own modules; teachers stay in eval mode whatever the mode."""
        super().train(mode)
        for teacher in self.teacher_models():
            teacher.eval()
        return self
