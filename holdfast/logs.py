"""structlog set-up shared by every Holdfast process.

Event names are fixed snake_case strings; variable data goes in key-value pairs. Request ids
travel in contextvars (``bind_request_id``), so every line logged while serving a request
carries it without threading it through calls. Prompts, message bodies and secrets are never
passed to a logger.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Final

import structlog

LOG_LEVEL_ENV: Final = "HOLDFAST_LOG_LEVEL"
LOG_FORMAT_ENV: Final = "HOLDFAST_LOG_FORMAT"  # "json" (default) or "console"
REQUEST_ID_HEADER: Final = "X-Request-Id"

_configured = False


def configure(*, level: str = "info", fmt: str = "json", service: str = "holdfast") -> None:
    """Configure structlog once per process; later calls only rebind the service name."""
    global _configured
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    if _configured:
        return
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries that use stdlib logging (aiohttp, grpc) go to stderr at WARNING and above.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")
    _configured = True


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(module=name)
    return logger


MAX_REQUEST_ID: Final = 64


def request_id_from(incoming: str) -> str:
    """The caller's id when it is short and printable (it lands in logs), else a fresh one."""
    if 0 < len(incoming) <= MAX_REQUEST_ID and incoming.isprintable():
        return incoming
    return new_request_id()


# One random prefix per process and a counter: unique enough for correlation across a fleet,
# and no system call per request (os.urandom is one).
_ID_PREFIX: Final = os.urandom(6).hex()
_ID_COUNTER: Final = itertools.count(1)
# The request being served: set by the HTTP layer around each request, read by every log line.
REQUEST_ID: Final[contextvars.ContextVar[str]] = contextvars.ContextVar("holdfast_request_id")


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


def add_request_id(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the request id of the request being served, if any."""
    request_id = REQUEST_ID.get(None)
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def bind_request_id(request_id: str) -> contextvars.Token[str]:
    """Log lines carry ``request_id`` until ``clear_request_id`` is given the token back."""
    return REQUEST_ID.set(request_id)


def clear_request_id(token: contextvars.Token[str]) -> None:
    REQUEST_ID.reset(token)
