"""Reading a conversation back from the release that holds it, for a session moved elsewhere.

What is read is the dialect's business (``StatefulDialect.history``); this module only fetches,
with the issuing release's own provider and key, and turns what goes wrong into the errors an
agent can act on: state the provider no longer has is a 409 (nothing can be rebuilt), a
provider that fails while being read is a 502.
"""

from __future__ import annotations

from typing import Any

from holdfast.dialects import StatefulDialect, StateGone
from holdfast.keyspace import Release
from sidecar.errors import StateNotPortable, UpstreamUnreachable
from sidecar.upstream import Upstream


async def history(
    upstream: Upstream,
    release: Release,
    dialect: StatefulDialect,
    state_id: str,
    *,
    request_id: str,
    moved_to: str,
) -> list[Any]:
    async def fetch(path: str) -> bytes | None:
        async with upstream.post(
            release, path, None, stream=False, request_id=f"{request_id}-rebuild", method="GET"
        ) as response:
            data = await upstream.read_body(release, response)
            status = response.status
        if status == 404:
            return None
        if status >= 400:
            raise UpstreamUnreachable(
                f"the provider of release {release.name!r} answered HTTP {status} while the "
                f"sidecar read the stored conversation of {state_id!r:.140} to carry it to "
                f"release {moved_to!r}; retry"
            )
        return data

    try:
        return await dialect.history(state_id, fetch)
    except StateGone as exc:
        raise StateNotPortable(
            f"an operator moved this session from release {release.name!r} to {moved_to!r}, "
            f"and {exc} (expired or deleted), so the conversation cannot be carried over; "
            "start a new one (send the whole conversation without previous_response_id)",
            param="previous_response_id",
        ) from exc
