"""The type of a config key with a fixed set of allowed values.

A schema field typed with a :class:`Choice` subclass makes OmegaConf refuse any other value while the
config is composed (a Hydra override or a yaml file), naming the key. Each member is named as its value
(``none = "none"``), so the same words work on the command line, in yaml files and in configs written
before the key was typed. Members are strings: ``cfg.method.adversarial == "none"`` holds, they hash and
serialise to JSON as their value, and they print as their value (``str``, f-strings, ``%s`` and
``%r`` alike), so a log line or an error message shows ``none``, never ``Adversarial.none``.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """Base of every choice type: subclass it with one member per allowed value, named as the value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    def __repr__(self) -> str:
        return repr(str(self.value))

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The allowed values, in their declared order (for messages and for code given plain strings)."""
        return tuple(str(member.value) for member in cls)
