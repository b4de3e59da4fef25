"""Adaptive-pooling alignment of block outputs (MEAL v1).

Student and teachers of different architectures produce block outputs of
different sizes. MEAL maps each of them to a fixed length ``out_dim``:

1. a map ``(B, C, H, W)`` (or any ``(B, C, ...)``) is reshaped to ``(B, C, L)``
   with ``L = H * W``;
2. each channel is adaptively pooled in 1-d (``avg`` or ``max``) to length
   ``out_dim``, giving ``(B, C, out_dim)``;
3. the channels are reduced (mean for ``avg``, max for ``max``), giving
   ``(B, out_dim)``.

Inputs of other ranks:

* 3-d ``(B, C, L)`` is taken as already flattened (step 1 is skipped);
* 2-d ``(B, N)`` is returned unchanged when ``N == out_dim`` (the logits case:
  pooling would be the identity anyway); otherwise it is treated as one
  channel, ``(B, 1, N)``, i.e. pooled to ``(B, out_dim)``;
* ``out_dim=None`` means "no alignment": the input is returned flattened to
  ``(B, -1)`` (unchanged for 2-d inputs), as the published code does for the
  final logits.

Fast path. :func:`align` reduces over channels *before* pooling. Adaptive
pooling uses the same windows for every channel, so for ``avg`` both orders are
the same linear average, and for ``max`` both orders take the maximum over the
same (channel x window) rectangle. This holds also when ``out_dim > L``
(adaptive pooling then repeats or pairs input positions, but the windows are
still shared by all channels). Reducing first touches ``B * L`` instead of
``B * C * out_dim`` values, which matters for the published sizes (e.g. 64
channels pooled to 10000). Values agree with :func:`align_reference` up to
floating-point rounding. For ``max``, where several elements tie for the
maximum the two paths may route the (sub)gradient to different tied elements;
without ties the gradients are identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from meal.core.choice import Choice
from meal.errors import ConfigError


class Pool(Choice):
    """The adaptive pooling of :func:`align`: MEAL v1's `method.pool`."""

    avg = "avg"
    max = "max"


POOL_KINDS: tuple[str, ...] = Pool.values()
"""The accepted values of ``pool``."""


def check_pool(pool: str) -> str:
    """Return ``pool`` if it is ``"avg"`` or ``"max"``, else raise :class:`ConfigError`."""
    if pool not in POOL_KINDS:
        raise ConfigError("method.pool", f"unknown pooling {pool!r}", f"use one of {', '.join(POOL_KINDS)}")
    return pool


def _check_out_dim(out_dim: int | None) -> None:
    if out_dim is None:
        return
    if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
        raise ConfigError("method.out_dims", f"each out_dim must be a positive integer or null, got {out_dim!r}")


def _as_channels(feature: Tensor) -> Tensor:
    """View ``feature`` as ``(B, C, L)``."""
    if feature.dim() < 2:
        raise ValueError(f"expected a batched tensor (B, ...), got shape {tuple(feature.shape)}")
    if feature.dim() == 2:
        return feature.unsqueeze(1)
    return feature.flatten(2)


def _passes_through(feature: Tensor, out_dim: int | None) -> bool:
    return out_dim is None or (feature.dim() == 2 and feature.shape[1] == out_dim)


def align_reference(feature: Tensor, out_dim: int | None, pool: str = "avg") -> Tensor:
    """Direct computation: pool every channel to ``out_dim``, then reduce the channels.

    Same contract as :func:`align`; kept as the reference it is tested against.
    """
    check_pool(pool)
    _check_out_dim(out_dim)
    if _passes_through(feature, out_dim):
        return feature.flatten(1)
    x = _as_channels(feature)
    if pool == "avg":
        return F.adaptive_avg_pool1d(x, out_dim).mean(dim=1)
    return F.adaptive_max_pool1d(x, out_dim).amax(dim=1)


def align(feature: Tensor, out_dim: int | None, pool: str = "avg") -> Tensor:
    """Align one block output to ``(B, out_dim)`` (see the module docstring).

    Args:
        feature: ``(B, C, H, W)``, ``(B, C, L)`` or ``(B, N)`` block output.
        out_dim: target length, or ``None`` for no alignment (flatten only).
        pool: ``"avg"`` or ``"max"``.

    Returns:
        ``(B, out_dim)`` tensor (``(B, N)`` unchanged for matching 2-d inputs).

    Raises:
        ConfigError: bad ``pool`` (key ``method.pool``) or ``out_dim``
            (key ``method.out_dims``).
        ValueError: ``feature`` has fewer than 2 dimensions.
    """
    check_pool(pool)
    _check_out_dim(out_dim)
    if _passes_through(feature, out_dim):
        return feature.flatten(1)
    x = _as_channels(feature)
    if pool == "avg":
        reduced = x.mean(dim=1, keepdim=True)
        return F.adaptive_avg_pool1d(reduced, out_dim).squeeze(1)
    reduced = x.amax(dim=1, keepdim=True)
    return F.adaptive_max_pool1d(reduced, out_dim).squeeze(1)


class Aligner(nn.Module):
    """Selects block outputs and aligns each to its ``out_dim``.

    Args:
        out_dims: one entry per block output of the network (e.g. the published
            ``[10000, 5000, 1000, 500, 10]`` for four stages plus the logits);
            ``None`` means "use as is" (flattened).
        pool: ``"avg"`` or ``"max"`` (the published ``pool_out``).
        blocks: indices of the blocks to distil (the published ``out_layer``),
            negative indices counting from the end (``[-1]`` = logits only);
            ``None`` selects all blocks. Must not name a block twice.
        reference: use :func:`align_reference` instead of the fast path.

    Calling the module with the full list of block outputs returns the list of
    aligned selected outputs, in the order of ``blocks``. It has no parameters.
    """

    def __init__(
        self,
        out_dims: Sequence[int | None],
        pool: str = "avg",
        blocks: Sequence[int] | None = None,
        reference: bool = False,
    ) -> None:
        super().__init__()
        self.pool = check_pool(pool)
        dims = list(out_dims)
        if not dims:
            raise ConfigError("method.out_dims", "needs at least one entry")
        for d in dims:
            _check_out_dim(d)
        self.out_dims: list[int | None] = dims
        n = len(dims)
        chosen = list(range(n)) if blocks is None else list(blocks)
        if not chosen:
            raise ConfigError("method.out_layer", "selects no block", "name at least one block, e.g. [-1]")
        resolved: list[int] = []
        for b in chosen:
            if isinstance(b, bool) or not isinstance(b, int) or not -n <= b < n:
                raise ConfigError(
                    "method.out_layer",
                    f"block index {b!r} out of range for {n} blocks",
                    f"use indices in [-{n}, {n - 1}]",
                )
            resolved.append(b % n)
        if len(set(resolved)) != len(resolved):
            raise ConfigError("method.out_layer", f"names a block twice: {chosen}")
        self.blocks: list[int] = resolved
        self.reference = reference

    @property
    def selected_out_dims(self) -> list[int | None]:
        """``out_dims`` of the selected blocks, in selection order."""
        return [self.out_dims[b] for b in self.blocks]

    def forward(self, outputs: Sequence[Tensor]) -> list[Tensor]:
        """Align the selected entries of ``outputs`` (one tensor per block)."""
        if len(outputs) != len(self.out_dims):
            raise ValueError(f"expected {len(self.out_dims)} block outputs, got {len(outputs)}")
        fn = align_reference if self.reference else align
        return [fn(outputs[b], self.out_dims[b], self.pool) for b in self.blocks]

    def extra_repr(self) -> str:
        """Summary shown by ``print(module)``."""
        return f"out_dims={self.out_dims}, pool={self.pool!r}, blocks={self.blocks}"
