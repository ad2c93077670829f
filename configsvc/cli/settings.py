"""Settings of the operator commands (``holdfastctl`` without ``serve``): frozen, loaded once.

Apart from the server's settings (``configsvc.server.settings``) so that a command loads only
the standard library and this package's client modules; what both share is
``configsvc.settings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from configsvc.settings import DEFAULT_LISTEN, ENV_TOKEN, SettingsError
from holdfast.names import ID_RE

ENV_SERVER: Final = "HOLDFAST_SERVER"
ENV_ACTOR: Final = "HOLDFAST_ACTOR"
DEFAULT_SERVER: Final = f"http://{DEFAULT_LISTEN}"
DEFAULT_ACTOR: Final = "unknown"
DEFAULT_CLIENT_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    server: str = DEFAULT_SERVER
    token: str = ""
    actor: str = DEFAULT_ACTOR
    json_output: bool = False
    timeout: float = DEFAULT_CLIENT_TIMEOUT

    def __post_init__(self) -> None:
        parts = urlsplit(self.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"--server {self.server!r}: need http(s)://host[:port]")
        if not ID_RE.fullmatch(self.actor):
            raise SettingsError(
                f"actor {self.actor!r}: use 1-128 characters of letters, digits and ._:@-"
            )
        if self.timeout <= 0:
            raise SettingsError("--timeout must be positive")

    def __repr__(self) -> str:
        return f"ClientSettings(server={self.server}, actor={self.actor})"


def default_actor(environ: Mapping[str, str]) -> str:
    return environ.get(ENV_ACTOR) or environ.get("USER") or DEFAULT_ACTOR


def load_client_settings(
    *,
    server: str | None,
    token: str | None,
    actor: str | None,
    json_output: bool,
    timeout: float | None,
    environ: Mapping[str, str] = os.environ,
) -> ClientSettings:
    return ClientSettings(
        server=(server or environ.get(ENV_SERVER, "") or DEFAULT_SERVER).rstrip("/"),
        token=(token if token is not None else environ.get(ENV_TOKEN, "")).strip(),
        actor=actor or default_actor(environ),
        json_output=json_output,
        timeout=DEFAULT_CLIENT_TIMEOUT if timeout is None else timeout,
    )
