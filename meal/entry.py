"""How meal's entry points end: one ``error:`` line and status 2 for a mistake a user can fix, 130 for Ctrl-C.

launch.py, ``python -m meal.softlabels``, ``python -m meal.bench`` and ``python -m meal.report`` run their
work through :func:`run_entry_point` (launch.py's Hydra main through :func:`run_hydra_main`). A user's
mistake is a :class:`~meal.errors.MealError`, an error Hydra or OmegaConf raise while composing or
reading the config (a misspelt key, a wrong type, a value a choice key does not allow, an unknown group
option, an override that does not parse; on the command line or in a config file), or an operating-system
error on a named file (a folder that cannot be written, a missing file); each is reported as one line
naming the key or file and the fix. Anything else is a bug and keeps its traceback. Only the standard
library is imported here, so launch.py stays light.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from meal.errors import MealError

log = logging.getLogger("meal")

USER_ERROR = 2
INTERRUPTED = 130
KINDS = {"Integer": "a whole number", "Float": "a number", "Boolean": "true or false"}
EXAMPLES = {"Integer": "3", "Float": "0.5", "Boolean": "true"}
# OmegaConf's message for a value outside an Enum-typed key's members (meal.core.choice.Choice)
NOT_A_CHOICE = re.compile(r"Invalid value '(.*)', expected one of \[(.*)\]")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _meal_error_line(exc: MealError) -> str:
    """A MealError's message on one line.

    An error raised in a DataLoader worker process reaches the main process re-raised with the
    worker's traceback as its message; the traceback's last line holds the original message.
    """
    lines = _lines(str(exc))
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    last = lines[-1]
    return last[len(prefix) :] if last.startswith(prefix) else " ".join(lines)


def _schema_keys(object_type: Any) -> list[str]:
    fields = getattr(object_type, "__dataclass_fields__", None)
    return sorted(fields) if isinstance(fields, Mapping) else []


def _omegaconf_line(exc: Any, override_hint: str | None = None) -> str:
    """``<full_key>: <problem> (<fix>)`` for an OmegaConf error raised on a config key."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

    key = getattr(exc, "full_key", None) or "config"
    problem = _lines(str(exc))[0] if _lines(str(exc)) else type(exc).__name__
    if isinstance(exc, (ConfigAttributeError, ConfigKeyError)):
        name = key.rsplit(".", 1)[-1]
        keys = _schema_keys(getattr(exc, "object_type", None))
        close = difflib.get_close_matches(name, keys, n=1)
        where = key.rsplit(".", 1)[0] if "." in key else ""
        fix = (
            f"did you mean {where + '.' if where else ''}{close[0]}?"
            if close
            else (f"the keys there are: {', '.join(keys)}" if keys else "check the key's spelling")
        )
        return f"{key}: no such key ({fix})"
    if isinstance(exc, MissingMandatoryValue):
        return f"{key}: has no value and needs one (set it on the command line: {key}=...)"
    choice = NOT_A_CHOICE.fullmatch(problem)
    if choice:
        return f"{key}: '{choice.group(1)}' is not a valid choice (choose one of: {choice.group(2)})"
    wanted = re.search(r"could not be converted to (\w+)|is not a valid (bool)", problem)
    kind = (wanted.group(1) or "Boolean") if wanted else None
    if kind in KINDS:
        base, is_element = key.split("[")[0], "[" in key
        example = f"[{EXAMPLES[kind]}]" if is_element else EXAMPLES[kind]
        override_hint = f"give {KINDS[kind]}, e.g. {base}={example}"
    fix = f" ({override_hint})" if override_hint else ""
    return f"{key}: {problem}{fix}"


def _missing_option(exc: Any) -> tuple[str | None, list[str] | None]:
    """The ``group/name`` Hydra could not find and the group's options, from the exception or its message.

    Hydra's own entry point raises the exception without its attributes; the message always holds
    ``Could not find 'group/name'`` and, for a group option, ``Available options in 'group':`` followed by
    one tab-indented option a line.
    """
    if exc.missing_cfg_file and exc.options is not None:
        return str(exc.missing_cfg_file), list(exc.options)
    text = str(exc)
    found = re.search(r"Could not find '([^']+)'", text)
    listed = re.search(r"Available options in '[^']+':\n((?:\t[^\n]*\n?)*)", text)
    if found is None or listed is None:
        return None, None
    return found.group(1), [line.strip() for line in listed.group(1).splitlines() if line.strip()]


def _hydra_line(exc: Exception) -> str | None:
    """One line for an error Hydra raises while composing a config, or None for any other error."""
    try:
        from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:  # pragma: no cover - both are dependencies of meal
        return None
    if isinstance(exc, MissingConfigException):
        missing, options = _missing_option(exc)
        if missing is not None and options is not None:
            group, _, name = missing.rpartition("/")
            close = difflib.get_close_matches(name, options, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            return f"{group}: no option '{name}'{hint} (choose one of: {', '.join(options)})"
    if isinstance(exc, OverrideParseException):
        return (
            f"command line: cannot parse an override: {' '.join(_lines(str(exc))[:-1] or _lines(str(exc)))} "
            "(write overrides as key=value, see https://hydra.cc/docs/advanced/override_grammar/basic)"
        )
    if isinstance(exc, OmegaConfBaseException):
        return _omegaconf_line(exc)
    if isinstance(exc, ConfigCompositionException):
        # an override's error is the cause; a config file's is the context (Hydra re-raises it naming the file)
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OmegaConfBaseException):
            append = next((line for line in _lines(str(exc)) if line.startswith("To append")), None)
            line = _omegaconf_line(cause, append[0].lower() + append[1:] if append else None)
            in_file = re.match(r"In '([^']+)': ", str(exc))
            return f"{line} (set in config '{in_file.group(1)}')" if in_file else line
        return " ".join(_lines(str(exc)))
    return None


def _os_line(exc: OSError) -> str | None:
    """``<file>: <reason>`` for an operating-system error on a named file."""
    if exc.filename is None:
        return None
    reason = exc.strerror or type(exc).__name__
    return f"{exc.filename}: {reason.lower()} (check that the path exists and this user may write there)"


def error_line(exc: BaseException) -> str | None:
    """The one-line message for a mistake a user can fix, or None when `exc` is not one (a bug)."""
    if isinstance(exc, MealError):
        return _meal_error_line(exc)
    if not isinstance(exc, Exception):
        return None
    if type(exc).__name__ == "OutOfMemoryError":
        first = _lines(str(exc))[0] if _lines(str(exc)) else "out of memory"
        return f"data.batch_size: the device ran out of memory ({first}) (use a smaller data.batch_size)"
    hydra_line = _hydra_line(exc)  # first: Hydra's MissingConfigException is an OSError
    if hydra_line is not None or not isinstance(exc, OSError):
        return hydra_line
    return _os_line(exc)


def _exit_interrupted(signum: int, frame: FrameType | None) -> None:
    sys.stderr.write("interrupted\n")
    os._exit(INTERRUPTED)


def quiet_interrupt_at_start() -> None:
    """Make Ctrl-C while an entry point is still importing end the process at once, quietly, with status 130.

    :func:`run_entry_point` restores Python's own Ctrl-C handling when it starts (so that a run
    interrupted later cleans up); a SIGINT that the parent process ignores stays ignored.
    """
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_interrupted)


def run_entry_point(main: Callable[..., Any], *args: Any) -> int:
    """Call ``main(*args)`` and return the process exit status: its own, 2 for a user error, 130 for Ctrl-C."""
    if signal.getsignal(signal.SIGINT) is _exit_interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        status = main(*args)
    except KeyboardInterrupt:
        log.warning("interrupted")
        return INTERRUPTED
    except Exception as exc:
        line = error_line(exc)
        if line is None:
            raise
        log.error("error: %s", line)
        return USER_ERROR
    return int(status) if isinstance(status, int) else 0


def run_hydra_main(hydra_main: Callable[[], Any]) -> int:
    """Run a ``@hydra.main`` function the way :func:`run_entry_point` runs any other entry point.

    Hydra prints its own multi-line report of a composition error and exits with status 1 unless
    HYDRA_FULL_ERROR=1, in which case it raises the error instead: it is set while `hydra_main` runs
    so that the error reaches :func:`error_line`. A user who set HYDRA_FULL_ERROR=1 gets the full
    traceback, as Hydra documents (Ctrl-C still ends quietly).
    """
    previous = os.environ.get("HYDRA_FULL_ERROR")
    if previous == "1":
        return run_entry_point(_interruptible(hydra_main))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return run_entry_point(hydra_main)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def _interruptible(main: Callable[[], Any]) -> Callable[[], Any]:
    """`main` with every error but Ctrl-C raised as a bug would be (SystemExit keeps the traceback printed)."""

    def call() -> Any:
        try:
            return main()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            traceback.print_exc()
            raise SystemExit(1) from None

    return call
