"""The answer a provider call yields once its head arrived."""

from __future__ import annotations

from typing import Protocol

from sidecar.upstream.h1.body import Body
from sidecar.upstream.h1.headers import Headers


class Exchange(Protocol):
    """The connection carrying the answer (``sidecar.upstream.h1.connection.Connection``)."""

    def release(self) -> None: ...
    def close(self) -> None: ...
    def half_close(self) -> bool: ...


class Response:
    """Status, headers and the body as it arrives; ``release`` or ``close`` exactly once.

    ``release`` hands the connection back to the pool when the answer was read to its end on
    a clean keep-alive connection, and closes it otherwise; ``close`` always closes it (the
    provider sees its client gone and stops generating)."""

    __slots__ = ("_exchange", "content", "headers", "status")

    def __init__(self, exchange: Exchange, status: int, headers: Headers, content: Body) -> None:
        self._exchange = exchange
        self.status = status
        self.headers = headers
        self.content = content

    async def read(self) -> bytes:
        return await self.content.read()

    def release(self) -> None:
        self._exchange.release()

    def close(self) -> None:
        self._exchange.close()

    def half_close(self) -> bool:
        """Shut the sending side (a TCP FIN) and keep reading; False when that cannot be done
        (TLS has no half-close, or the connection is gone)."""
        return self._exchange.half_close()

    def __repr__(self) -> str:
        return f"<Response {self.status}>"
