"""Choosing online, offline or disabled without the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from meal.errors import ConfigError
from meal.tracking.mode import api_key_source, resolve_mode

KEY = "0123456789abcdef0123456789abcdef01234567"


def test_auto_without_key_is_offline() -> None:
    assert resolve_mode("auto") == ("offline", "no API key configured")
    assert api_key_source() is None


def test_auto_with_env_key_is_online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    assert resolve_mode("auto") == ("online", "API key found in WANDB_API_KEY")


@pytest.mark.parametrize("machine", ["api.wandb.ai", "api.forge.coreweave.com"])
def test_auto_with_netrc_entry_is_online(isolated_wandb_env: Path, machine: str) -> None:
    netrc_file = isolated_wandb_env / ".netrc"
    netrc_file.write_text(f"machine {machine}\n  login user\n  password {KEY}\n")
    netrc_file.chmod(0o600)
    mode, reason = resolve_mode("auto")
    assert mode == "online"
    assert str(netrc_file) in reason


def test_netrc_entry_for_another_host_is_not_a_key(isolated_wandb_env: Path) -> None:
    netrc_file = isolated_wandb_env / ".netrc"
    netrc_file.write_text(f"machine example.org\n  login user\n  password {KEY}\n")
    netrc_file.chmod(0o600)
    assert resolve_mode("auto")[0] == "offline"


def test_netrc_entry_for_custom_base_url(isolated_wandb_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    netrc_file = isolated_wandb_env / ".netrc"
    netrc_file.write_text(f"machine wandb.example.org\n  login user\n  password {KEY}\n")
    netrc_file.chmod(0o600)
    assert resolve_mode("auto")[0] == "online"


def test_auto_follows_wandb_mode_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("auto") == ("offline", "WANDB_MODE=offline")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto")[0] == "disabled"


def test_auto_follows_wandb_settings_file(isolated_wandb_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    settings = isolated_wandb_env / ".config" / "wandb" / "settings"
    settings.parent.mkdir(parents=True)
    settings.write_text("[default]\nmode = offline\n")
    assert resolve_mode("auto")[0] == "offline"


def test_explicit_mode_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("online") == ("online", "logger.mode=online")


def test_unknown_mode_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^logger\.mode: unknown mode 'onlin'"):
        resolve_mode("onlin")
