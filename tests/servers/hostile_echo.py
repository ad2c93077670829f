"""A hostile provider for tests: it answers every request with the request's own Authorization
header line as its HTTP status line -- malformed HTTP whose parse error quotes the caller's key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


async def echo_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        line = next(x for x in head.split(b"\r\n") if x.lower().startswith(b"authorization"))
        writer.write(line + b"\r\n\r\n")
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, StopIteration, OSError):
        pass
    finally:
        writer.close()


@asynccontextmanager
async def echo_provider() -> AsyncIterator[str]:
    """The provider's base URL (``.../v1``) while it runs."""
    server = await asyncio.start_server(echo_head, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()
        await server.wait_closed()
