"""Sidecar settings: one frozen object built from the command line and the environment, with the
limits against hostile input."""

from __future__ import annotations

from sidecar.settings.cli import load_settings
from sidecar.settings.limits import server_options
from sidecar.settings.model import DEFAULT_BUDGET_MAX_TOKENS, SettingsError, SidecarSettings

__all__ = [
    "DEFAULT_BUDGET_MAX_TOKENS",
    "SettingsError",
    "SidecarSettings",
    "load_settings",
    "server_options",
]
