"""meal.entry: which errors are a user's (one line, status 2), Ctrl-C (status 130), and bugs (traceback kept)."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException

from meal.config import register
from meal.entry import (
    INTERRUPTED,
    USER_ERROR,
    error_line,
    quiet_interrupt_at_start,
    run_entry_point,
    run_hydra_main,
)
from meal.errors import ConfigError, DataError

CONF = Path(__file__).resolve().parents[1] / "conf"


def _composition_error(*overrides: str) -> Exception:
    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            compose("config", overrides=list(overrides))
    except Exception as exc:
        return exc
    finally:
        GlobalHydra.instance().clear()
    raise AssertionError(f"composing {overrides} succeeded")


def test_meal_errors_are_one_line() -> None:
    assert error_line(ConfigError("optim.lr", "must be > 0, got 0.0", "set optim.lr")) == (
        "optim.lr: must be > 0, got 0.0 (set optim.lr)"
    )


def test_an_error_from_a_loader_worker_keeps_its_last_line() -> None:
    worker = DataError(
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nmeal.errors.DataError: data.root: cannot read image a.png'
    )
    assert error_line(worker) == "data.root: cannot read image a.png"


def test_a_misspelt_key_names_the_key_and_the_closest_one() -> None:
    assert (
        error_line(_composition_error("trainer.epoch=3")) == "trainer.epoch: no such key (did you mean trainer.epochs?)"
    )


def test_a_key_with_no_close_match_lists_the_keys() -> None:
    line = error_line(_composition_error("optim.qqqq=1"))
    assert line.startswith("optim.qqqq: no such key (the keys there are: ")
    assert "betas, eps, lr, momentum, name, nesterov, weight_decay" in line


def test_a_wrong_type_names_the_key() -> None:
    assert error_line(_composition_error("trainer.epochs=three")) == (
        "trainer.epochs: Value 'three' of type 'str' could not be converted to Integer "
        "(give a whole number, e.g. trainer.epochs=3)"
    )


def test_an_unknown_group_option_lists_the_options() -> None:
    line = error_line(_composition_error("optim=adam"))
    assert line == "optim: no option 'adam'; did you mean 'adamw'? (choose one of: adamw, sgd, sgd_nesterov)"


def test_hydras_own_entry_point_raises_the_missing_option_without_attributes() -> None:
    exc = MissingConfigException(
        "In 'config': Could not find 'data/mnst'\n\nAvailable options in 'data':\n"
        "\tcifar10\n\tsynthetic\nConfig search path:\n\tprovider=hydra, path=pkg://hydra.conf"
    )
    assert error_line(exc) == "data: no option 'mnst' (choose one of: cifar10, synthetic)"


def test_an_override_that_does_not_parse() -> None:
    line = error_line(_composition_error("trainer.epochs=["))
    assert line is not None and line.startswith("command line: cannot parse an override: ")
    assert "\n" not in line


def test_a_named_file_the_system_refuses() -> None:
    exc = PermissionError(errno.EACCES, "Permission denied", "/srv/zoo/x.pt")
    assert (
        error_line(exc) == "/srv/zoo/x.pt: permission denied (check that the path exists and this user may write there)"
    )


def test_out_of_memory_points_at_the_batch_size() -> None:
    class OutOfMemoryError(RuntimeError):
        pass

    line = error_line(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert line == (
        "data.batch_size: the device ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB) "
        "(use a smaller data.batch_size)"
    )


@pytest.mark.parametrize("exc", [ValueError("bug"), OSError("no file named"), KeyError("k"), SystemExit(3)])
def test_bugs_are_not_user_errors(exc: BaseException) -> None:
    assert error_line(exc) is None


def test_run_entry_point_statuses(caplog: pytest.LogCaptureFixture) -> None:
    def fails() -> None:
        raise ConfigError("trainer.threads", "must be >= 1, got 0")

    def interrupted() -> None:
        raise KeyboardInterrupt

    assert run_entry_point(fails) == USER_ERROR == 2
    assert "error: trainer.threads: must be >= 1, got 0" in caplog.text
    assert run_entry_point(interrupted) == INTERRUPTED == 130
    assert run_entry_point(lambda status: status, 5) == 5
    assert run_entry_point(lambda: None) == 0
    with pytest.raises(ValueError, match="a bug"):
        run_entry_point(lambda: (_ for _ in ()).throw(ValueError("a bug")))


@pytest.mark.slow
def test_run_hydra_main_lets_composition_errors_reach_it_and_restores_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = {}

    def hydra_main() -> None:
        seen["during"] = os.environ.get("HYDRA_FULL_ERROR")
        raise _composition_error("trainer.epoch=3")

    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    assert run_hydra_main(hydra_main) == USER_ERROR
    assert seen["during"] == "1"
    assert os.environ["HYDRA_FULL_ERROR"] == "0"
    monkeypatch.delenv("HYDRA_FULL_ERROR")
    assert run_hydra_main(hydra_main) == USER_ERROR
    assert "HYDRA_FULL_ERROR" not in os.environ


def test_a_user_asking_for_full_errors_gets_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def hydra_main() -> None:
        raise ConfigError("optim.lr", "must be > 0")

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(SystemExit) as info:
        run_hydra_main(hydra_main)
    assert info.value.code == 1
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_while_importing_is_quiet_until_the_entry_point_runs() -> None:
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        quiet_interrupt_at_start()
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        assert run_entry_point(lambda: signal.getsignal(signal.SIGINT) is signal.default_int_handler) == 1
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        quiet_interrupt_at_start()  # a parent that ignores Ctrl-C keeps it ignored
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
