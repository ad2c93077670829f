"""The endpoints that read or change stored state by id (``GET``/``DELETE /v1/responses/{id}``,
``POST .../cancel``, ``GET .../input_items``), relayed to the release that issued the id with
that release's provider key, whatever the route says now.

An id no release of this agent issued is a 404 and goes nowhere; one whose release was deleted
is a 409. A successful delete deletes the record too. The provider's answer (status, body,
rate-limit headers) is relayed as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from holdfast.dialects import DIALECTS, StatefulDialect
from holdfast.dialects import stateful as stateful_of
from sidecar.config import ConfigState
from sidecar.errors import BodyTooLarge, StateNotFound, StateReleaseGone
from sidecar.pins import StateLookup, StateTable
from sidecar.pipeline import DIALECT_KEY, REQUEST_ID_KEY
from sidecar.upstream import Upstream, relayed_headers

RELEASE_HEADER = "X-Holdfast-Release"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StateEndpoints:
    def __init__(
        self,
        agent: str,
        config: ConfigState,
        table: StateTable,
        lookup: StateLookup,
        upstream: Upstream,
        *,
        max_body_bytes: int,
    ) -> None:
        self.agent = agent
        self.config = config
        self.table = table
        self.lookup = lookup
        self.upstream = upstream
        self.max_body_bytes = max_body_bytes

    def routes(self) -> list[web.RouteDef]:
        out: list[web.RouteDef] = []
        for dialect in DIALECTS:
            stateful = stateful_of(dialect)
            if stateful is None:
                continue
            for method, suffix in stateful.state_endpoints:
                path = f"{stateful.state_prefix}/{{id}}{suffix}"
                out.append(web.route(method, path, self._handler(stateful, method, suffix)))
        return out

    def _handler(self, dialect: StatefulDialect, method: str, suffix: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            request[DIALECT_KEY] = dialect
            return await self._relay(request, dialect, method, suffix)

        return handle

    async def _relay(
        self, request: web.Request, dialect: StatefulDialect, method: str, suffix: str
    ) -> web.StreamResponse:
        state_id = request.match_info["id"]
        owner = await self.lookup.owner(state_id)
        if owner is None:
            raise StateNotFound(
                f"no release of agent {self.agent!r} issued {state_id!r:.140} through its "
                "sidecars, or its record expired"
            )
        snapshot = self.config.current
        release = snapshot.releases.get(owner.release) if snapshot is not None else None
        if release is None:
            raise StateReleaseGone(
                f"{state_id!r:.140} was issued by release {owner.release!r}, which no longer "
                "exists: only it held that state"
            )
        body: bytes | None = None
        if method == "POST":
            if (request.content_length or 0) > self.max_body_bytes:
                raise BodyTooLarge(f"request body is over the {self.max_body_bytes}-byte limit")
            body = await request.read() or None
        path = f"{dialect.upstream_state_prefix}/{quote(state_id, safe='')}{suffix}"
        if request.query_string:
            path += "?" + request.query_string
        async with self.upstream.post(
            release,
            path,
            body,
            stream=False,
            request_id=request[REQUEST_ID_KEY],
            method=method,
        ) as upstream:
            data = await self.upstream.read_body(release, upstream)
            status = upstream.status
            headers = relayed_headers(upstream.headers)
            headers["Content-Type"] = upstream.headers.get("Content-Type", "application/json")
        if method == "DELETE" and status < 300:
            self.table.drop(state_id)
        headers[RELEASE_HEADER] = release.name
        return web.Response(status=status, body=data, headers=headers)
