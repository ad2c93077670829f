"""What the relay, the stream drain, shadow calls and state fetches use of a provider's answer.

A small surface, so that nothing above ``sidecar.upstream`` depends on an HTTP library's
classes: ``sidecar.upstream.h1.Response`` implements it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol


class ProviderBody(Protocol):
    """The body as it arrives."""

    def iter_any(self) -> AsyncIterator[bytes]:
        """Each read's worth of data until the end; a failure raises (``CONNECT_ERRORS``,
        ``TimeoutError``, ``SidecarShutdown`` after ``Upstream.cut``)."""
        ...

    def at_eof(self) -> bool:
        """Read to its end."""
        ...

    def read_nowait(self) -> bytes:
        """What is buffered, without waiting; RuntimeError while a reader waits."""
        ...

    def set_exception(self, exc: BaseException) -> None:
        """Every later read raises ``exc``."""
        ...


class ProviderResponse(Protocol):
    """A provider's answer once its head arrived (``Upstream.post`` yields it)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive lookups."""
        ...

    @property
    def content(self) -> ProviderBody: ...

    async def read(self) -> bytes:
        """The whole (rest of the) body."""
        ...

    def release(self) -> None:
        """Done with it: the connection is reused when the body was read to its end."""
        ...

    def close(self) -> None:
        """Done with it: the connection closes (the provider sees its client gone)."""
        ...

    def half_close(self) -> bool:
        """Shut the sending side, keep reading; False when that cannot be done (TLS)."""
        ...
