"""After the agent hangs up mid-stream: count what the provider already sent, then close.

When a write to the agent fails, the provider has usually sent more than the sidecar relayed:
chunks sit in aiohttp's buffer or arrive within the next few milliseconds. Charging only what
was relayed under-charges each cut stream by those tokens. ``count_rest`` keeps reading the
provider's stream -- never writing anything -- and hands each chunk (and whole SSE event) to
the pipeline's observers so that accounting sees everything produced, and stops at the end of
the stream, after ``QUIET`` seconds without data, or ``GRACE`` seconds at most; the caller then
closes the upstream connection, which is what stops a real provider generating.

What can still escape the count is what the provider writes in the instant between the last
read and the close reaching it (about one round trip): nothing for a provider that streams
tokens more than ``QUIET`` apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

from sidecar.exchange import Chain
from sidecar.sse_events import SseEvents
from sidecar.upstream import CONNECT_ERRORS

GRACE: Final = 0.05
QUIET: Final = 0.01


async def count_rest(
    chunks: AsyncIterator[bytes],
    events: SseEvents | None,
    chain: Chain,
    *,
    grace: float = GRACE,
    quiet: float = QUIET,
) -> int:
    """Feed the rest of an abandoned stream to the observers; returns the bytes read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    read = 0
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                chunk = await asyncio.wait_for(anext(chunks), timeout=min(quiet, left))
            except (StopAsyncIteration, TimeoutError):
                break
            read += len(chunk)
            if events is not None:
                for event in events.feed(chunk):
                    chain.event(event)  # observers count it; nothing is written
            chain.chunk(chunk)
        if events is not None and (rest := events.rest()):
            chain.event(rest)
    except CONNECT_ERRORS:
        pass  # the provider went too: what was read is all there is
    return read
