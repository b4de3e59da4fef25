"""Choosing the W&B mode: ``auto`` becomes online or offline without touching the network."""

from __future__ import annotations

import configparser
import netrc
import os
from pathlib import Path
from urllib.parse import urlsplit

from meal.errors import ConfigError
from meal.tracking.config import LoggerMode

MODES = LoggerMode.values()
# W&B's hosted API answers at both hosts; a key stored for either one logs in.
SAAS_API_HOSTS = ("api.wandb.ai", "api.forge.coreweave.com")

# Values W&B itself accepts in WANDB_MODE and settings files, mapped to ours.
_WANDB_MODE_ALIASES = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}


def resolve_mode(mode: str) -> tuple[str, str]:
    """Turn the configured ``logger.mode`` into ``online``, ``offline`` or ``disabled``.

    ``auto`` follows, in order: ``WANDB_MODE``; a ``mode`` in W&B's global settings file (what
    ``wandb offline`` / ``wandb online`` write); online when an API key is configured; else offline.

    Returns:
        The mode and a short reason for it, for the log line.

    Raises:
        ConfigError: ``logger.mode`` is not one of :data:`MODES`.
    """
    if mode not in MODES:
        raise ConfigError("logger.mode", f"unknown mode {mode!r}", f"use one of {', '.join(MODES)}")
    if mode != "auto":
        return str(mode), f"logger.mode={mode}"
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in _WANDB_MODE_ALIASES:
        return _WANDB_MODE_ALIASES[env_mode], f"WANDB_MODE={env_mode}"
    settings = _global_settings()
    settings_mode = settings.get("mode", "").strip().lower()
    if settings_mode in _WANDB_MODE_ALIASES:
        return _WANDB_MODE_ALIASES[settings_mode], f"mode={settings_mode} in {_settings_path()}"
    source = api_key_source()
    if source:
        return "online", f"API key found in {source}"
    return "offline", "no API key configured"


def api_key_source() -> str | None:
    """Where a W&B API key is configured, or ``None``; reads env and files only, never the network.

    Looks at ``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``, the netrc file (``NETRC``,
    ``~/.netrc`` or ``~/_netrc``) entry for the W&B host, and ``api_key`` in W&B's global settings.
    """
    if os.environ.get("WANDB_API_KEY", "").strip():
        return "WANDB_API_KEY"
    if os.environ.get("WANDB_IDENTITY_TOKEN_FILE", "").strip():
        return "WANDB_IDENTITY_TOKEN_FILE"
    settings = _global_settings()
    path = _netrc_path()
    if path.is_file():
        try:
            entries = netrc.netrc(path)
        except (netrc.NetrcParseError, OSError):
            entries = None
        for host in _api_hosts(os.environ.get("WANDB_BASE_URL") or settings.get("base_url")):
            entry = entries.authenticators(host) if entries else None
            if entry and entry[2]:
                return str(path)
    if settings.get("api_key", "").strip():
        return str(_settings_path())
    return None


def _api_hosts(base_url: str | None) -> tuple[str, ...]:
    """The netrc machine names a key for ``base_url`` (W&B's hosted service when unset) may be under."""
    host = urlsplit(base_url).netloc if base_url else ""
    if not host or host in SAAS_API_HOSTS:
        return SAAS_API_HOSTS
    return (host,)


def _netrc_path() -> Path:
    """The netrc file W&B reads: ``NETRC``, else ``~/.netrc``, else ``~/_netrc``."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix = Path("~/.netrc").expanduser()
    windows = Path("~/_netrc").expanduser()
    return windows if not unix.exists() and windows.exists() else unix


def _settings_path() -> Path:
    """W&B's global settings file (``$WANDB_CONFIG_DIR/settings``, default ``~/.config/wandb``)."""
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or Path("~/.config/wandb").expanduser()
    return Path(config_dir) / "settings"


def _global_settings() -> dict[str, str]:
    """The ``[default]`` section of W&B's global settings file; empty if absent or unreadable."""
    parser = configparser.ConfigParser()
    try:
        parser.read(_settings_path())
    except (configparser.Error, OSError, UnicodeDecodeError):
        return {}
    return dict(parser["default"]) if parser.has_section("default") else {}
