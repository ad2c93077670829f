"""Issue 3's acceptance test: 1,000 multi-turn sessions through two sidecar processes while an
operator runs a canary, raises it, runs a progressive rollout, pauses and aborts it, switches
blue-green and migrates pins. No session may ever change release except by the explicit
migration, and the canary's share of new sessions must match its percentage (exactly the sticky
hash's choice, and within statistical tolerance of the percentage).

Besides the cohorts opened once every sidecar has applied a change (whose shares are checked),
background clients keep opening sessions and taking turns, hopping sidecars, all along: while
each operator command is sent, committed and still travelling to the sidecars. Those sessions
are held to the same rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from holdfast import bucketing
from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack, get_json, start_stack

pytestmark = pytest.mark.etcd

MODELS = {"r1": "model-one", "r2": "model-two", "r3": "model-three"}
SESSIONS = 1000
CONCURRENCY = 48
CHURN_CLIENTS = 3
CHURN_PAUSE_S = 0.02
CHURN_SESSIONS = 500  # then the background clients only take more turns
# Generous on purpose: a first turn that etcd does not settle in time is served from a local
# decision (documented, counted); on a loaded 2-core machine that would make this test's
# invariant a matter of luck, so it runs with every first turn settled by etcd (and checks it).
SIDECAR_ARGS = ("--pin-create-timeout", "5")


@dataclass
class Turn:
    release: str
    model_in_reply: str
    migrated_from: str | None


@dataclass
class Session:
    sid: str
    via_user_field: bool
    turns: list[Turn] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # an agent's turns are sequential


@pytest.fixture
def stack(tmp_path: Path, etcd_node: EtcdNode, etcd_env: str) -> Iterator[Stack]:
    s = start_stack(tmp_path, etcd_env, [etcd_node.client_url], svc_args=("--rollout-tick", "0.1"))
    s.create_releases(*MODELS.items())
    s.set_stable("r1")
    yield s
    s.stop()


class Driver:
    def __init__(self, http: aiohttp.ClientSession, sidecars: list[procs.ManagedProcess]):
        self.http = http
        self.urls = [p.url for p in sidecars]
        self.gate = asyncio.Semaphore(CONCURRENCY)
        self.sessions: dict[str, Session] = {}
        self.errors: list[str] = []
        self.churned = 0

    async def turn(self, session: Session, number: int | None = None) -> None:
        async with session.lock:
            number = len(session.turns) if number is None else number
            url = self.urls[(number + int(session.sid[-4:])) % len(self.urls)]  # hop sidecars
            body: dict[str, Any] = {
                "model": AGENT,
                "messages": [{"role": "user", "content": f"turn {number} of {session.sid}"}],
            }
            headers = {}
            if session.via_user_field:
                body["user"] = session.sid
            else:
                headers["X-Holdfast-Session"] = session.sid
            async with self.gate:
                async with self.http.post(
                    f"{url}/v1/chat/completions", json=body, headers=headers
                ) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        self.errors.append(f"{session.sid} turn {number}: {resp.status} {text}")
                        return
                    reply = json.loads(text)["choices"][0]["message"]["content"]
                    session.turns.append(
                        Turn(
                            release=resp.headers["X-Holdfast-Release"],
                            model_in_reply=reply.split("]", 1)[0].lstrip("["),
                            migrated_from=resp.headers.get("X-Holdfast-Migrated-From"),
                        )
                    )

    async def open(self, first: int, last: int) -> list[Session]:
        fresh = []
        for i in range(first, last):
            sid = f"sess-{i:04d}"
            self.sessions[sid] = Session(sid, via_user_field=i % 5 == 0)
            fresh.append(self.sessions[sid])
        await asyncio.gather(*(self.turn(s, 0) for s in fresh))
        return fresh

    async def continue_all(self) -> None:
        """One more turn for every open session, in parallel."""
        await asyncio.gather(*(self.turn(s) for s in self.sessions.values()))

    async def churn(self, client: int, stop: asyncio.Event) -> None:
        """Until ``stop``: open a session, then take a turn of a random open one, and again."""
        rng = random.Random(client)
        while not stop.is_set():
            if self.churned < CHURN_SESSIONS:
                n = self.churned = self.churned + 1
                session = Session(f"churn-{n:04d}", via_user_field=n % 7 == 0)
                self.sessions[session.sid] = session
                await self.turn(session)
            await self.turn(rng.choice(list(self.sessions.values())))
            await asyncio.sleep(CHURN_PAUSE_S)

    @contextlib.asynccontextmanager
    async def churning(self) -> AsyncIterator[None]:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            for client in range(CHURN_CLIENTS):
                group.create_task(self.churn(client, stop))
            try:
                yield
            finally:
                stop.set()


async def converge(stack: Stack, revision: int) -> None:
    """Wait until every sidecar applied the operator's change (its config revision)."""
    deadline = time.monotonic() + 15
    for side in stack.sidecars:
        while True:
            _, status = await get_json(f"{side.url}/status")
            if (status["config"]["revision"] or 0) >= revision:
                break
            assert time.monotonic() < deadline, f"{side.name} stuck at {status['config']}"
            await asyncio.sleep(0.05)


async def op(stack: Stack, *args: str) -> dict[str, Any]:
    """An operator command, in a thread: the churn keeps running while it is sent."""
    result = await asyncio.to_thread(stack.ctl, "--json", *args)
    body: dict[str, Any] = json.loads(result.stdout)
    return body


async def rollout_api(
    http: aiohttp.ClientSession, stack: Stack, action: str = ""
) -> dict[str, Any]:
    """Rollout status (no action) or an action over HTTP: no CLI start-up where timing counts."""
    url = f"{stack.svc.url}/v1/agents/{AGENT}/rollout" + (f"/{action}" if action else "")
    headers = {"Authorization": f"Bearer {stack.token}"}
    method = "POST" if action else "GET"
    async with http.request(method, url, json={} if action else None, headers=headers) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body


async def pause_at_step(http: aiohttp.ClientSession, stack: Stack, step: int) -> dict[str, Any]:
    """Wait for the controller to take ``step`` by itself, then pause the rollout there."""
    deadline = time.monotonic() + 20
    while (await rollout_api(http, stack))["rollout"]["step"] != step:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    return await rollout_api(http, stack, "pause")


def on_canary(sid: str, percent: float) -> bool:
    return bucketing.selected(bucketing.CANARY, AGENT, sid, percent)


def assert_share(sessions: list[Session], release: str, percent: float) -> None:
    """Exactly the hash's choice, and the share within 4 standard deviations of ``percent``."""
    chosen = [s.turns[0].release == release for s in sessions]
    assert chosen == [on_canary(s.sid, percent) for s in sessions]
    n, p = len(sessions), percent / 100
    assert abs(sum(chosen) - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1, (sum(chosen), n, p)


async def test_a_thousand_sessions_never_change_release_unless_migrated(
    stack: Stack, etcd_node: EtcdNode
) -> None:
    for name in ("side-a", "side-b"):
        stack.start_sidecar([etcd_node.client_url], name=name, args=SIDECAR_ARGS)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        d = Driver(http, stack.sidecars)
        await converge(stack, (await op(stack, "route", "show", AGENT))["mod_revision"])

        before = await d.open(0, 200)
        assert {s.turns[0].release for s in before} == {"r1"}

        async with d.churning():
            await converge(
                stack, (await op(stack, "canary", "set", AGENT, "r2", "--percent", "20"))[
                    "mod_revision"
                ],
            )  # fmt: skip
            at20 = await d.open(200, 500)
            await d.continue_all()
            assert_share(at20, "r2", 20)

            # raising the percentage moves no pinned session; new ones follow the new share
            raised = await op(stack, "canary", "set", AGENT, "r2", "--percent", "50")
            await converge(stack, raised["mod_revision"])
            at50 = await d.open(500, 650)
            await d.continue_all()
            assert_share(at50, "r2", 50)

            await converge(stack, (await op(stack, "canary", "clear", AGENT))["mod_revision"])
            # Each cohort is opened while the rollout is paused on its step, so that a slow
            # machine cannot see the controller step (or finish) in the middle of one.
            await op(stack, "rollout", "start", AGENT, "r3", "--steps", "10,40", "--interval", "3s")
            paused = await rollout_api(http, stack, "pause")
            await converge(stack, paused["mod_revision"])
            at10 = await d.open(650, 750)
            await rollout_api(http, stack, "resume")
            paused = await pause_at_step(http, stack, 1)  # the controller steps by itself
            assert paused["route"]["canary_percent"] == 40.0
            await converge(stack, paused["mod_revision"])
            at40 = await d.open(750, 800)
            await converge(stack, (await op(stack, "rollout", "abort", AGENT))["mod_revision"])
            await d.continue_all()
            assert_share(at10, "r3", 10)
            assert_share(at40, "r3", 40)
            after_abort = await d.open(800, 880)
            assert {s.turns[0].release for s in after_abort} == {"r1"}  # the canary is at 0%

            # blue-green: all new sessions to r2 at once, pinned ones stay
            await converge(stack, (await op(stack, "switch", AGENT, "r2"))["mod_revision"])
            switched = await d.open(880, SESSIONS)
            assert {s.turns[0].release for s in switched} == {"r2"}
            await d.continue_all()

            # the one deliberate move: every session on r3 goes back to r1 (turns go on)
            on_r3 = {sid for sid, s in d.sessions.items() if s.turns and s.turns[0].release == "r3"}
            assert on_r3, "the rollout should have put some sessions on r3"
            moved = await op(stack, "pins", "migrate", AGENT, "--from", "r3", "--to", "r1")
            assert moved["migrated"] == len(on_r3)
            await asyncio.sleep(0.5)  # the watch carries the migrated pins to both sidecars
        await d.continue_all()
        await d.continue_all()
        statuses = [(await get_json(f"{side.url}/status"))[1] for side in stack.sidecars]

    assert d.errors == []
    assert d.churned > 50, "the background sessions should have run all along"
    for status in statuses:  # every first turn was settled by etcd, none decided blind
        assert status["pins"]["claims_fallback"] == 0, status["pins"]
    for sid, s in d.sessions.items():
        releases = [t.release for t in s.turns]
        assert all(MODELS[t.release] == t.model_in_reply for t in s.turns), sid  # really served
        if sid in on_r3:
            cut = next(i for i, t in enumerate(s.turns) if t.release != "r3")
            assert set(releases[:cut]) == {"r3"} and set(releases[cut:]) == {"r1"}, releases
            assert s.turns[cut].migrated_from == "r3"  # the agent is told
            assert all(t.migrated_from is None for t in s.turns[:cut])
            # each sidecar tells at most once (the notice is acknowledged through etcd)
            assert sum(t.migrated_from == "r3" for t in s.turns[cut:]) <= len(stack.sidecars)
        else:
            assert len(set(releases)) == 1, (sid, releases)
            assert all(t.migrated_from is None for t in s.turns)
    assert min(len(s.turns) for s in d.sessions.values()) >= 3
