"""aiohttp's log record of a malformed request loses the request bytes it would quote."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from holdfast.net.http_logs import SERVER_LOGGER, RedactParseErrors, redact_parse_errors

SECRET = "sk-agent-secret-0123"


def record(exc: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        SERVER_LOGGER, logging.ERROR, __file__, 1, "Error handling request from %s",
        ("127.0.0.1",), (type(exc), exc, None),
    )  # fmt: skip


def rendered(rec: logging.LogRecord) -> str:
    return logging.Formatter("%(levelname)s %(name)s %(message)s").format(rec)


def test_parse_errors_are_logged_without_the_bytes_they_quote() -> None:
    for exc in (
        LineTooLong(f"Bearer {SECRET}xxxx", "8190", "9000"),
        BadHttpMessage(f"Invalid header value char: b'Authorization: Bearer {SECRET}\\x00'"),
    ):
        before = record(exc)
        assert SECRET in rendered(before)  # what aiohttp would have printed
        assert RedactParseErrors().filter(before) is True
        line = rendered(before)
        assert SECRET not in line and "Traceback" not in line
        assert line.startswith("WARNING aiohttp.server malformed request refused: ")
        assert type(exc).__name__ in line and "HTTP 400" in line


def test_other_records_pass_unchanged_and_the_filter_installs_once() -> None:
    rec = record(RuntimeError("a real bug"))
    assert RedactParseErrors().filter(rec) is True
    assert rec.exc_info is not None and rec.levelno == logging.ERROR
    logger = logging.getLogger(SERVER_LOGGER)
    before = list(logger.filters)
    logger.filters[:] = [f for f in before if not isinstance(f, RedactParseErrors)]
    try:
        redact_parse_errors()
        redact_parse_errors()
        assert len([f for f in logger.filters if isinstance(f, RedactParseErrors)]) == 1
    finally:
        logger.filters[:] = before
