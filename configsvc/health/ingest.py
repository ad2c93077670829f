"""``POST /v1/health/beats``: a sidecar's health snapshot, delivered to the replicas that own its
agent (``configsvc.health.replicas``), instead of a replicated etcd write watched by everyone.

The body is the snapshot record itself (msgpack, ``application/msgpack``, at most one record's
size). The caller's token has role sidecar (or operator, admin); a sidecar token bound to an
agent speaks for that agent's sidecars only. A beat older than the one already taken from the
same sidecar is accepted and ignored (beats carry cumulative counters: the newest wins).
"""

from __future__ import annotations

import time
from typing import Final

import msgpack
from aiohttp import web

from configsvc.errors import Forbidden, InvalidHealthBeat, InvalidRequest
from configsvc.health.figures import local_health
from configsvc.health.fleet import FleetHealth
from configsvc.http import IDENTITY_KEY, name, read_document, reply
from holdfast.keyspace import MAX_RECORD_BYTES, HealthSnapshot, RecordError

BEATS_PATH: Final = "/v1/health/beats"
CONTENT_TYPE: Final = "application/msgpack"
MAX_AGENTS_PER_QUERY: Final = 1000


class BeatsApi:
    def __init__(self, fleet: FleetHealth, *, replica: str = "") -> None:
        self.fleet = fleet
        self.replica = replica

    async def post(self, request: web.Request) -> web.Response:
        if request.content_type != CONTENT_TYPE:
            raise InvalidHealthBeat(f"a health beat is a msgpack record: send {CONTENT_TYPE}")
        body = await read_document(
            request,
            limit=MAX_RECORD_BYTES,
            too_large=f"a health beat is at most {MAX_RECORD_BYTES} bytes",
        )
        started = time.perf_counter()
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
        self.fleet.ingest_seconds += time.perf_counter() - started
        return web.Response(status=204)

    async def snapshots(self, request: web.Request) -> web.Response:
        """``GET /v1/health/snapshots?agent=A``: the newest snapshot of each live sidecar of A
        this replica holds, as a msgpack list of records (what another replica asks the owner
        for, as ``configsvc.health.peers`` does)."""
        agent = name(request.query.get("agent", ""), what="agent", param="agent")
        records = [s.encode() for s in self.fleet.latest(agent)]
        body: bytes = msgpack.packb(records, use_bin_type=True)
        return web.Response(body=body, content_type=CONTENT_TYPE)

    async def agents(self, request: web.Request) -> web.Response:
        """``GET /v1/health/agents?agent=A&agent=B``: each agent's last minute per release and
        its live sidecars, as this replica holds them (what another replica's console asks the
        owners for, ``configsvc.health.owners``); never forwarded."""
        asked = request.query.getall("agent", [])
        if not 1 <= len(asked) <= MAX_AGENTS_PER_QUERY:
            raise InvalidRequest(f"name 1 to {MAX_AGENTS_PER_QUERY} agents", param="agent")
        now = self.fleet.clock()
        agents = [name(a, what="agent", param="agent") for a in asked]
        return reply(
            {
                "agents": [
                    local_health(self.fleet, a, now, replica=self.replica).to_json(a)
                    for a in agents
                ]
            }
        )

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(BEATS_PATH, self.post),
            web.get("/v1/health/snapshots", self.snapshots),
            web.get("/v1/health/agents", self.agents),
        ]
