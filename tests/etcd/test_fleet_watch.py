"""Issue 22's acceptance test: what a sidecar receives from etcd does not grow with the fleet.

Real sidecar processes of two agents (each with a fleet budget, so they write spend reports;
each beating health to configsvc), a real configsvc with a token of role sidecar per agent, one
real etcd. Counted where it comes in, at the sidecar's etcd adapter (``/status``: keys received
per key directory): no sidecar ever receives a key of the other agent's pins, releases, state
owners or quota slices, nor any sidecar's health, spend or outcomes. Then the same workload per
agent (new sessions whose turns hop between the agent's sidecars, a flag kill, a canary set) runs
on 4 sidecars and on 16: the keys and key bytes each sidecar receives for it are the same, whatever
the number of sidecars. No timing is measured: the counts are taken at a sync point (every
sidecar has applied the workload's last write).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from configsvc.cli.client import Client
from configsvc.cli.settings import ClientSettings
from holdfast.keyspace import Keyspace
from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import get_json, wait_for

pytestmark = pytest.mark.etcd

AGENTS = ("alpha", "beta")
KEY_VAR = "FLEET_PROVIDER_KEY"
FLAG = "fleet-switch"
SESSIONS_PER_AGENT = 8


def token_line(subject: str, role: str, token: str, agent: str = "") -> str:
    line = {"subject": subject, "role": role, "sha256": hashlib.sha256(token.encode()).hexdigest()}
    return json.dumps(line | ({"agent": agent} if agent else {}))


@dataclass
class Fleet:
    base: Path
    env: str
    etcd: str
    fake: procs.ManagedProcess
    svc: procs.ManagedProcess
    admin: str
    sidecar_tokens: dict[str, str]
    sidecars: dict[str, list[procs.ManagedProcess]] = field(default_factory=dict)

    def api(self) -> Client:
        return Client(ClientSettings(server=self.svc.url, token=self.admin, actor="fleet-test"))

    def start(self, per_agent: int) -> None:
        """Sidecars up to ``per_agent`` for each agent, booting side by side."""
        fresh = []
        for agent in AGENTS:
            have = self.sidecars.setdefault(agent, [])
            for i in range(len(have), per_agent):
                name = f"{agent}-{i}"
                proc = procs.sidecar(
                    self.base / "logs", agent, [self.etcd], self.env, self.base / f"state-{name}",
                    "--sidecar-id", f"{agent}.{i}", "--budget-report-interval", "0.2",
                    name=name, extra_env={KEY_VAR: "sk-fleet"},
                    sidecar_token=self.sidecar_tokens[agent],
                ).spawn()  # fmt: skip
                have.append(proc)
                fresh.append(proc)
        for proc in fresh:
            proc.ready(60)

    def stop(self) -> None:
        for procs_ in self.sidecars.values():
            for proc in procs_:
                proc.stop()
        self.svc.stop()
        self.fake.stop()


@pytest.fixture
def fleet(tmp_path: Path, etcd_node: EtcdNode, etcd_env: str) -> Iterator[Fleet]:
    admin = secrets.token_hex(16)
    sidecar_tokens = {a: secrets.token_hex(16) for a in AGENTS}
    tokens = tmp_path / "tokens.jsonl"
    lines = [token_line("ops", "admin", admin)]
    lines += [token_line(f"sidecars-{a}", "sidecar", t, a) for a, t in sidecar_tokens.items()]
    tokens.write_text("\n".join(lines) + "\n")
    fake = procs.fakellm(tmp_path / "logs").start()
    svc = procs.configsvc(
        tmp_path / "logs", [etcd_node.client_url], etcd_env, "", "--tokens-file", str(tokens)
    ).start()
    running = Fleet(tmp_path, etcd_env, etcd_node.client_url, fake, svc, admin, sidecar_tokens)
    api = running.api()
    for agent in AGENTS:
        for name, model in (("r1", "model-one"), ("r2", "model-two")):
            api.create_release(
                agent,
                {"release": name, "model": model, "base_url": f"{fake.url}/v1",
                 "api_key_env": KEY_VAR},
            )  # fmt: skip
        api.set_stable(agent, "r1", "", None)
        api.call("PUT", f"/v1/budgets/agent:{agent}", {"tokens": 10_000_000, "window": "1d"})
    flags = {"flags": {FLAG: {"state": "ENABLED", "variants": {"on": True, "off": False},
                              "defaultVariant": "on"}}}  # fmt: skip
    api.call("POST", "/v1/flags/apply", {"content": json.dumps(flags), "source": "fleet.json"})
    yield running
    running.stop()


async def statuses(fleet: Fleet) -> dict[str, dict[str, Any]]:
    out = {}
    for procs_ in fleet.sidecars.values():
        for proc in procs_:
            _, body = await get_json(f"{proc.url}/status")
            out[proc.name] = body
    return out


async def chat(http: aiohttp.ClientSession, url: str, agent: str, session: str) -> str:
    body = {"model": agent, "messages": [{"role": "user", "content": f"turn of {session}"}]}
    headers = {"X-Holdfast-Session": session}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return resp.headers["X-Holdfast-Release"]


async def workload(fleet: Fleet, label: str) -> int:
    """Per agent, the same work whatever its number of sidecars: new sessions spread over its
    sidecars, each session's second turn on the next sidecar once every sidecar of the agent
    has the sessions' pins (so the second turn is a lookup of the pin its watch brought, never
    a claim that reads the pin back: a race the count would otherwise include); a flag kill and
    enable; a canary set per agent. Returns the revision of its last write."""
    ks = Keyspace(fleet.env)
    async with aiohttp.ClientSession() as http:
        for agent in AGENTS:
            sides = fleet.sidecars[agent]
            pins_dir = ks.agent_prefix("pins", agent)
            had = {p.url: received((await get_json(f"{p.url}/status"))[1]) for p in sides}
            sessions = [f"{label}-{agent}-{n}" for n in range(SESSIONS_PER_AGENT)]
            for n, session in enumerate(sessions):
                assert await chat(http, sides[n % len(sides)].url, agent, session) == "r1"
            for side in sides:
                start = had[side.url].get(pins_dir, (0, 0))[0]
                await wait_for(
                    f"{side.url}/status",
                    lambda b, start=start, pins_dir=pins_dir: (
                        received(b).get(pins_dir, (0, 0))[0] >= start + SESSIONS_PER_AGENT
                    ),
                )
            for n, session in enumerate(sessions):
                second = sides[(n + 1) % len(sides)].url
                assert await chat(http, second, agent, session) == "r1"  # the pin, not a guess
    api = fleet.api()
    api.call("POST", f"/v1/flags/{FLAG}/kill", {"reason": label})
    for agent in AGENTS:
        api.call("PUT", f"/v1/agents/{agent}/canary", {"release": "r2", "percent": 5})
        api.call("DELETE", f"/v1/agents/{agent}/canary", {})
    done: dict[str, Any] = api.call("POST", f"/v1/flags/{FLAG}/enable", {"reason": label})
    return int(done["flag"]["mod_revision"])


async def synced(fleet: Fleet, revision: int) -> dict[str, dict[str, Any]]:
    """Every sidecar's status once it has applied ``revision`` (a write every one receives)."""
    for procs_ in fleet.sidecars.values():
        for proc in procs_:
            await wait_for(f"{proc.url}/status", lambda b: b["etcd"]["watch_revision"] >= revision)
    return await statuses(fleet)


def received(status: dict[str, Any]) -> dict[str, tuple[int, int]]:
    by_dir = status["etcd"]["received"]["by_dir"]
    return {d: (v["keys"], v["bytes"]) for d, v in by_dir.items()}


def workload_share(fleet: Fleet, before: dict[str, Any], after: dict[str, Any]) -> tuple[int, int]:
    """Keys and key bytes one sidecar received between two statuses in the directories the
    workload writes (its agent's pins, the flags, the routes; quota slices move on the budget
    controller's clock, not the workload's, and are checked for ownership only)."""
    ks = Keyspace(fleet.env)
    dirs = (
        ks.agent_prefix("pins", after["agent"]),
        ks.kind_prefix("flags"),
        ks.kind_prefix("routes"),
    )
    a, b = received(before), received(after)
    keys = sum(b.get(d, (0, 0))[0] - a.get(d, (0, 0))[0] for d in dirs)
    size = sum(b.get(d, (0, 0))[1] - a.get(d, (0, 0))[1] for d in dirs)
    return keys, size


def assert_only_its_own(fleet: Fleet, status: dict[str, Any]) -> None:
    ks = Keyspace(fleet.env)
    agent = status["agent"]
    other = next(a for a in AGENTS if a != agent)
    dirs = set(received(status))
    for kind in ("health", "spend", "outcomes"):  # what sidecars write for themselves
        leaked = [d for d in dirs if d.startswith(ks.kind_prefix(kind))]
        assert leaked == [], (status["sidecar_id"], leaked)
    for kind in ("pins", "releases", "responses", "slices"):
        assert not any(d.startswith(ks.agent_prefix(kind, other)) for d in dirs), (kind, dirs)
    assert ks.agent_prefix("pins", agent) in dirs  # what it needs does arrive
    assert ks.agent_prefix("slices", agent) in dirs
    assert status["health"]["mode"] == "configsvc", status["health"]


async def test_a_sidecar_receives_only_its_own_and_the_same_at_4_and_16_sidecars(
    fleet: Fleet,
) -> None:
    shares: dict[int, dict[str, tuple[int, int]]] = {}
    for per_agent in (2, 8):
        fleet.start(per_agent)
        for procs_ in fleet.sidecars.values():
            for proc in procs_:  # routed, holding its budget slice, beating to configsvc
                await wait_for(
                    f"{proc.url}/status",
                    lambda b: (
                        (b["route"] or {}).get("stable") == "r1"
                        and b["health"]["mode"] == "configsvc"
                        and b["health"]["beats_delivered"] > 0
                    ),
                    timeout=30,
                )
        before = await statuses(fleet)
        last = await workload(fleet, f"w{per_agent}")
        after = await synced(fleet, last)
        shares[per_agent] = {n: workload_share(fleet, before[n], after[n]) for n in after}
        for status in after.values():
            assert_only_its_own(fleet, status)
    small, large = shares[2], shares[8]
    print("\nkeys, key bytes received per sidecar for the workload:", small, large)
    # Every sidecar received the same keys for the same work at 4 and at 16 sidecars: its own
    # agent's pins of the new sessions, the flag's and its route's changes; nothing per sidecar.
    expected = SESSIONS_PER_AGENT + 2 + 2
    assert {k for k, _ in small.values()} == {k for k, _ in large.values()} == {expected}
    mean_small = sum(b for _, b in small.values()) / len(small)
    mean_large = sum(b for _, b in large.values()) / len(large)
    assert mean_large <= 1.05 * mean_small, (mean_small, mean_large)
    # ... and configsvc, not etcd, took the health beats (etcd holds each sidecar's presence)
    _, body = await get_json(f"{fleet.svc.url}/v1/status?agent=alpha")
    assert body["agents"][0]["sidecars"] == 8
