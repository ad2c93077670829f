"""structlog set-up shared by every Holdfast process.

Event names are fixed snake_case strings; variable data goes in key-value pairs. Request ids
travel in contextvars (``bind_request_id``), so every line logged while serving a request
carries it without threading it through calls. Prompts, message bodies and secrets are never
passed to a logger.
"""

from __future__ import annotations

import logging
import os
import sys
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


def new_request_id() -> str:
    # 64 random bits: unique enough for correlation, a fraction of uuid4's cost on the hot path.
    return os.urandom(8).hex()


def bind_request_id(request_id: str) -> None:
    structlog.contextvars.bind_contextvars(request_id=request_id)


def clear_request_id() -> None:
    structlog.contextvars.unbind_contextvars("request_id")
