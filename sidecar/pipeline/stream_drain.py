"""After the agent hangs up mid-stream: stop the provider, count what it sent, then close.

When a write to the agent fails, or the agent's hang-up cancels the handler, the provider has
usually sent more than the sidecar relayed: chunks sit in the client's buffer, in the socket, or
are being written while the provider has not yet noticed anybody left. Charging only what was
relayed would under-charge each cut stream by those tokens.

``hang_up`` first shuts the *sending* side of the provider connection (a TCP FIN): the provider
sees its client gone and stops generating, while everything it wrote before noticing still
arrives. ``count_rest`` then keeps reading -- never writing anything -- and hands each chunk
(and whole SSE event) to the pipeline's observers, until the provider ends the stream or
``HALF_CLOSED_GRACE`` passes; so for a provider that stops on a FIN every token it produced is
charged. TLS has no half-close: over HTTPS the drain reads until ``QUIET`` seconds without data
or ``GRACE`` at most, and what the provider writes between the sidecar's last read and the
close reaching it is produced (and billed by the provider) but never seen by the sidecar.

Before it returns, the drain lets the event loop take in once more what the socket holds and
reads that without waiting: on a busy sidecar the wake-up after the last wait can lag by tens of
milliseconds, and a chunk that arrived meanwhile would otherwise be dropped unread by the close.
The caller then closes the upstream connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from sidecar.pipeline.stream_feed import StreamFeed
from sidecar.upstream import CONNECT_ERRORS, ProviderBody, ProviderResponse

GRACE: Final = 0.05
QUIET: Final = 0.01
# A half-closed provider ends the stream itself once it noticed; this only bounds one that
# does not (well inside the one second in which a hang-up must stop the provider's work).
HALF_CLOSED_GRACE: Final = 0.5


def hang_up(response: ProviderResponse) -> bool:
    """Shut the sending side of the provider connection, keep reading it; False when that
    cannot be done (TLS, or the connection is gone already)."""
    return response.half_close()


async def count_rest(
    chunks: AsyncIterator[bytes],
    stream: StreamFeed,
    *,
    content: ProviderBody | None = None,
    grace: float = GRACE,
    quiet: float = QUIET,
) -> int:
    """Feed the rest of an abandoned stream to the observers; returns the bytes read.

    After ``hang_up`` succeeded, pass ``grace=quiet=HALF_CLOSED_GRACE``: the stream's end, not
    a pause, is what says the provider is done."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    read = 0

    def feed(chunk: bytes) -> None:
        nonlocal read
        read += len(chunk)
        stream.feed(chunk)  # observers count it; nothing is written

    cancelled = False
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                chunk = await asyncio.wait_for(anext(chunks), timeout=min(quiet, left))
            except (StopAsyncIteration, TimeoutError):
                break
            except asyncio.CancelledError:
                # A failed write started this drain; the same hang-up then cancels the
                # handler. The drain is bounded: finish it, and pass the cancellation on.
                if cancelled:
                    raise
                cancelled = True
                continue
            feed(chunk)
        if content is not None:
            await asyncio.sleep(0)  # one more pass over the sockets, then read without waiting
            with contextlib.suppress(RuntimeError):  # a reader still waiting: nothing to add
                if last := content.read_nowait():
                    feed(last)
        stream.rest()
    except CONNECT_ERRORS:
        pass  # the provider went too: what was read is all there is
    if cancelled:
        raise asyncio.CancelledError
    return read
