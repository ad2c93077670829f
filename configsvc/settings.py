"""What the server's settings (``configsvc.server.settings``) and holdfastctl's
(``configsvc.cli.settings``) have in common: the error a bad setting raises, the variable that
holds the token, the default address, and the header that carries the operator's name.

Imports nothing: every ``holdfastctl`` command loads it, and should not pay for the server.
"""

from __future__ import annotations

from typing import Final

ENV_TOKEN: Final = "HOLDFAST_TOKEN"  # noqa: S105 - a variable name, not a secret
DEFAULT_LISTEN: Final = "127.0.0.1:8700"
# Who asked for a change, as the operator names themselves; the token decides what they may do.
ACTOR_HEADER: Final = "X-Holdfast-Actor"


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it."""
