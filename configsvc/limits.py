"""Numbers the API enforces and ``holdfastctl`` checks before it sends anything.

Imports nothing: the CLI loads this module, and an operator's command should not pay for the
server's imports (aiohttp, jsonschema, the records) on every run.
"""

from __future__ import annotations

from typing import Final

MAX_HISTORY_LIMIT: Final = 1000
ROLLOUT_ACTIONS: Final = ("pause", "resume", "promote", "abort")
