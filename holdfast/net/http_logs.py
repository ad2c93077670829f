"""aiohttp's own log lines about malformed requests, without the request bytes they quote.

When a request head cannot be parsed (a header line over --max-header-bytes, a NUL or CR in a
value, conflicting framing), aiohttp's server logs "Error handling request" at ERROR with a
traceback whose message quotes up to 100 bytes of the offending line -- an agent's own
``Authorization`` header, say. ``RedactParseErrors`` turns such a record into one WARNING line
naming only the error's class and status; the client got its 400 already. Other records of the
logger pass unchanged.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp.http_exceptions import HttpProcessingError

SERVER_LOGGER: Final = "aiohttp.server"


class RedactParseErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "malformed request refused: %s (HTTP %s)"
            record.args = (type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def redact_parse_errors() -> None:
    """Install the filter on aiohttp's server logger (once per process)."""
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, RedactParseErrors) for f in logger.filters):
        logger.addFilter(RedactParseErrors())
