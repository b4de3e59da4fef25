"""Which teachers a training step distils from.

``random`` (MEAL v1): one teacher index drawn uniformly per step from a
dedicated, seeded ``torch.Generator``, independent of the global RNG, so the
sequence of teachers is fixed by the seed alone. :meth:`TeacherSelector.state_dict`
captures the generator state, so a resumed run continues the same sequence.

``mean`` (MEAL V2): every step uses all teachers (their softmaxes are averaged
by the caller).
"""

from __future__ import annotations

from typing import Any

import torch

from meal.core.choice import Choice
from meal.errors import CheckpointError, ConfigError


class TeacherSelection(Choice):
    """How a step's teachers are chosen (see the module docstring): MEAL v1's `method.teacher_selection`."""

    random = "random"
    mean = "mean"


SELECTION_MODES: tuple[str, ...] = TeacherSelection.values()
"""The accepted values of ``mode``."""


class TeacherSelector:
    """Per-step teacher choice.

    Args:
        n_teachers: number of teachers (``>= 1``).
        mode: ``"random"`` (one uniform draw per step) or ``"mean"`` (all).
        seed: seed of the private generator used by ``random``.

    Call :meth:`select` (or the object itself) once per training step.
    """

    def __init__(self, n_teachers: int, mode: str = "random", seed: int = 0) -> None:
        if isinstance(n_teachers, bool) or not isinstance(n_teachers, int) or n_teachers < 1:
            raise ConfigError("teachers", f"need at least one teacher, got {n_teachers!r}")
        if mode not in SELECTION_MODES:
            raise ConfigError(
                "method.teacher_selection",
                f"unknown mode {mode!r}",
                f"use one of {', '.join(SELECTION_MODES)}",
            )
        self.n_teachers = n_teachers
        self.mode = str(mode)  # a plain string in the saved state, whatever type the config gave
        self.seed = int(seed)
        self.draws = 0
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(self.seed)

    def select(self) -> list[int]:
        """Indices of the teachers for this step: ``[i]`` for ``random``, all for ``mean``."""
        if self.mode == "mean":
            return list(range(self.n_teachers))
        index = int(torch.randint(self.n_teachers, (1,), generator=self._generator).item())
        self.draws += 1
        return [index]

    __call__ = select

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same sequence after a restart."""
        return {
            "n_teachers": self.n_teachers,
            "mode": self.mode,
            "seed": self.seed,
            "draws": self.draws,
            "generator_state": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the teacher count and mode must match.

        Raises:
            CheckpointError: the saved state is for another teacher count or mode,
                or lacks a key.
        """
        try:
            n, mode, gen_state = state["n_teachers"], state["mode"], state["generator_state"]
            draws, seed = int(state["draws"]), int(state["seed"])
        except KeyError as exc:
            raise CheckpointError(f"teacher selector state lacks {exc.args[0]!r}") from None
        if n != self.n_teachers or mode != self.mode:
            raise CheckpointError(
                f"teacher selector state is for {n} teachers in mode {mode!r}, but this run has "
                f"{self.n_teachers} teachers in mode {self.mode!r}; resume with the same teachers"
            )
        self._generator.set_state(gen_state)
        self.draws = draws
        self.seed = seed
