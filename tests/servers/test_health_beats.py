"""Tier 2: health beats over HTTP, the sidecar's real publisher against configsvc's real API
(in-process aiohttp servers, the in-memory store): where beats go with and without replicas,
the token a beat needs, and what configsvc refuses."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp.test_utils import TestServer

from configsvc.health import AgentHealth, OwnerHealth, Peers, ReplicaSet
from configsvc.health.fleet import FleetHealth
from configsvc.health.ingest import BeatsApi
from configsvc.http import Authorizer
from configsvc.http.tokens import parse_tokens
from configsvc.releases import ConfigService
from configsvc.server.app import build_app
from holdfast.keyspace import MAX_RECORD_BYTES, HealthSnapshot, Keyspace
from holdfast.keyspace.member import Member
from holdfast.store import KeyValue
from holdfast.store.memory import MemoryStore
from holdfast.store.mirror import MirrorUpdate
from sidecar.ops.beats import BEATS_PATH, BeatSender, Replicas
from sidecar.ops.health import HealthPublisher, HealthSources
from tests.unit.test_health_gate import sig

KS = Keyspace("dev")
AGENT = "support"


def line(subject: str, role: str, token: str, agent: str = "") -> str:
    entry = {"subject": subject, "role": role, "sha256": hashlib.sha256(token.encode()).hexdigest()}
    return json.dumps(entry | ({"agent": agent} if agent else {}))


@dataclass
class Configsvc:
    server: TestServer
    fleet: FleetHealth
    member: Member

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def configsvc() -> AsyncIterator[Configsvc]:
    store = MemoryStore()
    tokens = parse_tokens(
        "\n".join(
            [
                line("ops", "viewer", "viewer-t"),
                line("fleet", "sidecar", "support-t", AGENT),
                line("other", "sidecar", "other-t", "billing"),
            ]
        )
    )
    fleet = FleetHealth(store, KS)
    app = build_app(
        ConfigService(store, KS),
        Authorizer("admin-t", tokens, require_token_for_reads=True),
        extra=[BeatsApi(fleet)],
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    yield Configsvc(server, fleet, Member(replica="rep-1", url=url, started_at=1.0))
    await server.close()


def publisher(store: MemoryStore, replicas: Replicas, token: str) -> HealthPublisher:
    return HealthPublisher(
        store,
        KS,
        sidecar_id=f"{AGENT}.pod-1",
        agent=AGENT,
        interval=0.5,
        sources=HealthSources(config_revision=lambda: 7, signals=lambda: (sig("r1", 12),)),
        replicas=replicas,
        sender=BeatSender(token, timeout=2.0),
    )


async def test_beats_go_to_the_replicas_once_there_are_some_and_etcd_keeps_presence(
    configsvc: Configsvc,
) -> None:
    store = MemoryStore()
    replicas = Replicas(KS, AGENT)
    pub = publisher(store, replicas, "support-t")
    await pub._lease.start()  # the presence key is written under the sidecar's lease
    try:
        assert pub.mode == "etcd"  # no replica known: into etcd, as before
        presence = await store.get(pub.key)
        assert presence is not None and presence.lease == pub._lease.lease_id
        assert await pub.beat() and pub.published == 2  # presence, then a beat into etcd
        key = KS.member("rep-1")
        replicas.apply_reset({key: _kv(key, configsvc.member.encode())})
        assert pub.mode == "configsvc"
        written = (await store.get(pub.key)).mod_revision  # type: ignore[union-attr]
        assert await pub.beat() and pub.beats == 1
        assert (await store.get(pub.key)).mod_revision == written  # type: ignore[union-attr]
        (taken,) = configsvc.fleet.latest(AGENT)
        assert (taken.sidecar_id, taken.config_revision) == (f"{AGENT}.pod-1", 7)
        assert configsvc.fleet.windows.sidecars(AGENT) == 1 and configsvc.fleet.ingested == 1
        assert pub.status()["targets"]["rep-1"]["delivered"] == 1
    finally:
        await pub.sender.close()
        await pub._lease.close()


async def test_a_beat_needs_a_sidecar_token_of_its_agent_or_operator(configsvc: Configsvc) -> None:
    good = HealthSnapshot(
        sidecar_id=f"{AGENT}.pod-2", agent=AGENT, at=5.0, started_at=1.0, config_revision=1
    ).encode()
    url = configsvc.url + BEATS_PATH
    kind = {"Content-Type": "application/msgpack"}

    async def post(token: str, body: bytes, headers: dict[str, str] = kind) -> tuple[int, str]:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=body, headers=headers | auth) as resp:
                text = await resp.text()
                code = json.loads(text)["error"]["code"] if text else ""
                return resp.status, code

    assert await post("support-t", good) == (204, "")
    assert await post("admin-t", good) == (204, "")
    assert await post("other-t", good) == (403, "forbidden")  # bound to another agent
    assert await post("viewer-t", good) == (403, "forbidden")  # a beat can move the gate
    assert await post("", good) == (401, "invalid_token")
    assert await post("support-t", b"\x00not msgpack") == (400, "invalid_health_beat")
    assert await post("support-t", good, {"Content-Type": "application/json"}) == (
        400,
        "invalid_health_beat",
    )
    huge = msgpack.packb({"x": b"0" * (MAX_RECORD_BYTES + 1)})
    assert await post("support-t", huge) == (413, "request_too_large")
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer support-t"}
        async with http.get(f"{configsvc.url}/v1/agents/{AGENT}/releases", headers=headers) as resp:
            assert resp.status == 403  # a sidecar's token reads nothing
    assert configsvc.fleet.windows.sidecars(AGENT) == 1


async def test_a_refused_beat_is_logged_once_and_counted(configsvc: Configsvc) -> None:
    replicas = Replicas(KS, AGENT)
    key = KS.member("rep-1")
    replicas.apply_reset({key: _kv(key, configsvc.member.encode())})
    pub = publisher(MemoryStore(), replicas, "other-t")  # another agent's token
    try:
        for _ in range(3):
            assert not await pub.beat()
        target = pub.status()["targets"]["rep-1"]
        assert (target["refused"], target["delivered"]) == (3, 0)
        assert target["last_error"] == "HTTP 403"
    finally:
        await pub.sender.close()


def _kv(key: str, value: bytes) -> KeyValue:
    return KeyValue(key, value, 1, 1, 1)


async def test_another_replica_draws_an_agents_health_from_its_owner(configsvc: Configsvc) -> None:
    """``GET /v1/health/agents`` on the owner, read by ``OwnerHealth`` on a replica that holds
    nothing of the agent (the console's tick): the owner's figures and live sidecars; a refused
    token or a malformed query says why, and the non-owner falls back to its own view."""
    now = time.time()  # the owner's windows run on its clock
    for at, served in ((now - 2.0, 4), (now, 12)):
        beat = HealthSnapshot(sidecar_id=f"{AGENT}.pod-3", agent=AGENT, at=at, started_at=1.0,
                              config_revision=9, signals=(sig("r1", served),))  # fmt: skip
        configsvc.fleet.ingest(beat)
    here = FleetHealth(MemoryStore(), KS, clock=lambda: 6.0)
    replicas = ReplicaSet(MemoryStore(), KS, replica="rep-2", ttl=5)
    key = KS.member("rep-1")
    replicas._on_update(MirrorUpdate(1, True, {key: _kv(key, configsvc.member.encode())}, ()))
    assert not replicas.holds(AGENT)
    peers = Peers()
    try:
        owners = OwnerHealth(here, replicas, peers, headers={"Authorization": "Bearer viewer-t"})
        found = await owners.gather([AGENT], 6.0, lambda _agent: True)
        health = found[AGENT]
        assert health.unreachable == ""
        assert [(b.sidecar_id, b.config_revision) for b in health.beats] == [(beat.sidecar_id, 9)]
        assert health.releases["r1"]["requests"] > 0
        assert AgentHealth.from_json(health.to_json(AGENT)) == health
        refused = OwnerHealth(here, replicas, peers, headers={"Authorization": "Bearer nope"})
        health = (await refused.gather([AGENT], 6.0, lambda _agent: True))[AGENT]
        assert "answered 401" in health.unreachable and "CONSOLE_SECRET" in health.unreachable
        assert health.releases == {} and refused.failed == 1
    finally:
        await peers.close()
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer viewer-t"}
        for query in ("", "?agent=Bad%20Name", "?" + "&".join(["agent=a"] * 1001)):
            async with http.get(f"{configsvc.url}/v1/health/agents{query}", headers=headers) as r:
                assert r.status == 400, query
    broken: dict[str, Any]
    for broken in ({"releases": [], "sidecars": []}, {"releases": {}, "sidecars": [[1, 2]]},
                   {"releases": {}}):  # fmt: skip
        with pytest.raises((ValueError, TypeError, KeyError)):
            AgentHealth.from_json(broken)
