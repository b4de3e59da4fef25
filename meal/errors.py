"""Errors a user can cause, reported as one clear line.

Every error raised for bad input is a :class:`MealError`. Its message names the
config key or file at fault and says how to fix it; the entry point prints the
message on one line and exits non-zero without a traceback.
"""

from __future__ import annotations


class MealError(Exception):
    """A problem the user can fix (bad config, missing file, refused resume)."""


class ConfigError(MealError):
    """A config value is invalid. The message starts with the key's full name."""

    def __init__(self, key: str, problem: str, fix: str | None = None) -> None:
        self.key = key
        message = f"{key}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)


class CheckpointError(MealError):
    """A checkpoint file is missing, truncated, corrupt or does not fit the model."""


class DataError(MealError):
    """A dataset cannot be found or read."""


class ResultError(MealError):
    """A run's result.json is not JSON, not an object, or holds a field of the wrong type.

    The message starts with the file's path; :attr:`problem` is the rest of it.
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self) -> tuple[type[ResultError], tuple[object, str]]:
        return (type(self), (self.path, self.problem))
