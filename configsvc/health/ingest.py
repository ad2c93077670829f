"""``POST /v1/health/beats``: a sidecar's health snapshot, delivered to the replicas that own its
agent (``configsvc.health.replicas``), instead of a replicated etcd write watched by everyone.

The body is the snapshot record itself (msgpack, ``application/msgpack``, at most one record's
size). The caller's token has role sidecar (or operator, admin); a sidecar token bound to an
agent speaks for that agent's sidecars only. A beat older than the one already taken from the
same sidecar is accepted and ignored (beats carry cumulative counters: the newest wins).
"""

from __future__ import annotations

from typing import Final

import msgpack
from aiohttp import web

from configsvc.errors import Forbidden, InvalidHealthBeat
from configsvc.health.fleet import FleetHealth
from configsvc.http import IDENTITY_KEY, name, read_document
from holdfast.keyspace import MAX_RECORD_BYTES, HealthSnapshot, RecordError

BEATS_PATH: Final = "/v1/health/beats"
CONTENT_TYPE: Final = "application/msgpack"


class BeatsApi:
    def __init__(self, fleet: FleetHealth) -> None:
        self.fleet = fleet

    async def post(self, request: web.Request) -> web.Response:
        if request.content_type != CONTENT_TYPE:
            raise InvalidHealthBeat(f"a health beat is a msgpack record: send {CONTENT_TYPE}")
        body = await read_document(
            request,
            limit=MAX_RECORD_BYTES,
            too_large=f"a health beat is at most {MAX_RECORD_BYTES} bytes",
        )
        try:
            snapshot = HealthSnapshot.decode(body)
        except RecordError as exc:
            raise InvalidHealthBeat(f"not a health snapshot: {exc}") from None
        identity = request.get(IDENTITY_KEY)
        bound = identity.agent if identity is not None else ""
        if bound and snapshot.agent != bound:
            raise Forbidden(
                f"this token speaks for the sidecars of agent {bound!r}, not {snapshot.agent!r:.70}"
            )
        self.fleet.ingest(snapshot)
        return web.Response(status=204)

    async def snapshots(self, request: web.Request) -> web.Response:
        """``GET /v1/health/snapshots?agent=A``: the newest snapshot of each live sidecar of A
        this replica holds, as a msgpack list of records (what another replica asks the owner
        for, as ``configsvc.health.peers`` does)."""
        agent = name(request.query.get("agent", ""), what="agent", param="agent")
        records = [s.encode() for s in self.fleet.latest(agent)]
        body: bytes = msgpack.packb(records, use_bin_type=True)
        return web.Response(body=body, content_type=CONTENT_TYPE)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(BEATS_PATH, self.post),
            web.get("/v1/health/snapshots", self.snapshots),
        ]
