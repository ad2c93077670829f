"""A lean HTTP/1.1 client for provider calls: asyncio protocols over httptools (llhttp).

Measured against aiohttp's client for the same call (``bench/upstream_client.py``), it does the
same job with a fraction of the instructions (ADR 0013, ``docs/architecture/decisions``).
"""

from __future__ import annotations

from sidecar.upstream.h1.body import Body
from sidecar.upstream.h1.client import Client
from sidecar.upstream.h1.errors import (
    ConnectFailed,
    ConnectionLost,
    H1Error,
    MalformedResponse,
    ResponseTimeout,
)
from sidecar.upstream.h1.headers import Headers
from sidecar.upstream.h1.request import BadTarget, Target
from sidecar.upstream.h1.response import Response

__all__ = [
    "BadTarget",
    "Body",
    "Client",
    "ConnectFailed",
    "ConnectionLost",
    "H1Error",
    "Headers",
    "MalformedResponse",
    "Response",
    "ResponseTimeout",
    "Target",
]
