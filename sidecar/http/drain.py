"""Graceful stop on SIGTERM: stop accepting, let requests in flight finish, cut the rest in time.

aiohttp's own shutdown waits ``shutdown_timeout`` for a handler, then waits as long again after
cancelling its request, so a long stream could hold the process for twice the drain timeout
and then end without a word to the agent. Here the whole drain is bounded by the sidecar's
``--drain-timeout``: once it runs out the provider calls still in flight are cut
(``Upstream.cut``), so a stream ends with an in-band error event and a request still waiting
for its answer gets 503 with Retry-After; ``CUT_GRACE`` later whatever is left is abandoned and
the process exits anyway.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from holdfast.logs import get_logger
from sidecar.upstream import Upstream

log = get_logger(__name__)

# Time for cut handlers to write their error and close: a few event-loop turns in practice.
CUT_GRACE: Final = 1.0


def runner_shutdown_timeout(drain_timeout: float) -> float:
    """The aiohttp runner's own timeout: long enough that ``drain`` always acts first."""
    return drain_timeout + CUT_GRACE


async def drain(runner: web.AppRunner, upstream: Upstream, drain_timeout: float) -> bool:
    """Stop ``runner`` within ``drain_timeout`` + CUT_GRACE; True when nothing had to be cut."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    # A short-lived task awaited right here: it outlives neither this call nor the process.
    cleanup = asyncio.ensure_future(runner.cleanup())
    done, _ = await asyncio.wait({cleanup}, timeout=drain_timeout)
    if done:
        cleanup.result()
        log.info("sidecar_drained", seconds=round(loop.time() - started, 3))
        return True
    cut = upstream.cut()
    log.warning("sidecar_drain_timeout_cut", cut=cut, timeout_seconds=drain_timeout)
    done, _ = await asyncio.wait({cleanup}, timeout=CUT_GRACE)
    if done:
        cleanup.result()
        return False
    log.warning("sidecar_drain_abandoned", grace_seconds=CUT_GRACE)
    cleanup.cancel()
    await asyncio.wait({cleanup}, timeout=CUT_GRACE)
    return False
