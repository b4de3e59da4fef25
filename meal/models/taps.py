"""Block outputs ("taps") of any network, taken with forward hooks on named submodules.

The wrapped network is never rewritten: :class:`TappedModel` registers a forward hook on each
tapped module (dotted names as in ``named_modules()``). The hooks record outputs only while
:meth:`TappedModel.forward_with_taps` runs, so a plain forward holds no extra memory.

Checkpoints stay plain: ``TappedModel.state_dict()`` has exactly the wrapped network's keys (no
``net.`` prefix), also when the model sits inside another module, and ``load_state_dict`` accepts
such plain state dicts. ``named_parameters()`` still reports names under ``net.``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from meal.errors import ConfigError

_NET = "net."


class _TapStore:
    """Outputs recorded by the tap hooks; recording is on only between `start` and `stop`."""

    def __init__(self) -> None:
        self.outputs: dict[str, Any] | None = None

    def start(self) -> None:
        self.outputs = {}

    def stop(self) -> dict[str, Any]:
        outputs, self.outputs = self.outputs or {}, None
        return outputs


class _TapHook:
    """Forward hook that stores one module's output in a shared :class:`_TapStore`."""

    def __init__(self, name: str, store: _TapStore) -> None:
        self.name = name
        self.store = store

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.store.outputs is not None:
            self.store.outputs[self.name] = output


def _strip_net_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """State-dict post hook: ``<prefix>net.<key>`` becomes ``<prefix><key>``, order kept."""
    inner = prefix + _NET
    for name in [name for name in state_dict if name.startswith(inner)]:
        state_dict[prefix + name[len(inner) :]] = state_dict.pop(name)


def _add_net_prefix(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """Load-state-dict pre hook: ``<prefix><key>`` becomes ``<prefix>net.<key>``."""
    for name in [name for name in state_dict if name.startswith(prefix)]:
        state_dict[prefix + _NET + name[len(prefix) :]] = state_dict.pop(name)


def taps_key_for(arch_key: str) -> str:
    """The config key of the tap list that sits beside `arch_key` (``student.arch`` -> ``student.taps``)."""
    parent, _, _ = arch_key.rpartition(".")
    return f"{parent}.taps" if parent else "taps"


def _module_names_hint(net: nn.Module, limit: int = 12) -> str:
    names = sorted((name for name, _ in net.named_modules() if name), key=lambda name: name.count("."))
    shown = ", ".join(names[:limit])
    more = f", ... ({len(names) - limit} more; see model.named_modules())" if len(names) > limit else ""
    return f"choose from: {shown}{more}"


class TappedModel(nn.Module):
    """A network plus the names of the modules whose outputs :meth:`forward_with_taps` returns.

    Args:
        net: any module whose forward maps a batch of images to logits ``(B, num_classes)``.
        arch: the architecture name, for messages and for ``result.json``.
        tap_names: dotted module names (as in ``net.named_modules()``), in output order.
        taps_key: config key named in errors about the tap list.

    A tap is the tensor the module returned; a module that runs twice in one forward pass keeps
    its last output, and a later in-place operation on that tensor (an in-place ReLU right after a
    tapped BatchNorm, say) changes the tap too, so tap block outputs rather than such layers.
    Under DistributedDataParallel call ``ddp_model(x, with_taps=True)``; ``nn.DataParallel``
    replicas share one store and are not supported.
    """

    def __init__(self, net: nn.Module, arch: str, tap_names: Sequence[str], taps_key: str = "student.taps") -> None:
        super().__init__()
        self.net = net
        self.arch = arch
        self.taps_key = taps_key
        self.tap_names = list(tap_names)
        modules = dict(net.named_modules())
        seen: set[str] = set()
        for name in self.tap_names:
            if not name or name not in modules:
                raise ConfigError(taps_key, f"no module named '{name}' in {arch}", _module_names_hint(net))
            if name in seen:
                raise ConfigError(taps_key, f"module '{name}' is listed twice", "list each module once")
            seen.add(name)
        self._store = _TapStore()
        for name in self.tap_names:
            modules[name].register_forward_hook(_TapHook(name, self._store))
        self.register_state_dict_post_hook(_strip_net_prefix)
        self.register_load_state_dict_pre_hook(_add_net_prefix)

    def forward(self, x: torch.Tensor, *, with_taps: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(B, num_classes)``, keeping no tap output; with `with_taps`, the same as
        :meth:`forward_with_taps` (so a DistributedDataParallel wrapper can return taps too).
        """
        if with_taps:
            return self.forward_with_taps(x)
        return self.net(x)

    def forward_with_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tapped modules' outputs in ``tap_names`` order, then the logits as the last element."""
        self._store.start()
        try:
            logits = self.net(x)
        finally:
            outputs = self._store.stop()
        taps = []
        for name in self.tap_names:
            output = outputs.get(name)
            if not isinstance(output, torch.Tensor):
                problem = (
                    f"module '{name}' of {self.arch} did not run"
                    if name not in outputs
                    else f"module '{name}' of {self.arch} returned {type(output).__name__}, not a tensor"
                )
                raise ConfigError(self.taps_key, problem, "tap a module that returns one tensor in forward")
            taps.append(output)
        return [*taps, logits]

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, taps={self.tap_names}"
