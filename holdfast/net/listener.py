"""Defaults of an HTTP listener facing hostile input, the same for the sidecar and configsvc.

Each process turns them into its own command-line options and aiohttp server kwargs (the
sidecar's ``sidecar.settings.limits``, configsvc's ``configsvc.server.limits``); keeping the
numbers here means an operator tuning one listener finds the same defaults on the other.
Imports nothing, so ``holdfastctl`` can show them in its help cheaply.
"""

from __future__ import annotations

from typing import Final

DEFAULT_MAX_HEADERS: Final = 100
DEFAULT_MAX_HEADER_BYTES: Final = 8190  # one header line; aiohttp's and nginx's default
DEFAULT_MAX_LINE_BYTES: Final = 8190  # the request line (method, path, version)
# aiohttp closes a connection that has not sent a whole request head within this many seconds
# of opening or of its previous response: the idle timeout is also the slowloris deadline.
DEFAULT_IDLE_TIMEOUT: Final = 15.0
