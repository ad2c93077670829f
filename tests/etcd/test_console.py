"""configsvc's console over a real etcd, in process: signing in and what a session opens, the
fleet pages of an agent of 1,000 sidecars (paged, no row per sidecar on the main pages), a live
update pushed when the route changes, the audit trail's filters and pages, the concern pages,
bad input, etcd away, and ``/metrics``. A real browser drives it in test_console_browser.py."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from configsvc.budgets import BudgetOps
from configsvc.budgets.payloads import SetBudget
from configsvc.console import COOKIE, ConcernOps, Console
from configsvc.contracts import ContractOps
from configsvc.experiments import ExperimentOps
from configsvc.flags import FlagOps
from configsvc.health import FleetHealth, PolicyGate
from configsvc.http import Authorizer, Role, TokenEntry, token_digest
from configsvc.metrics import ControlPlaneCollector, MetricsEndpoint
from configsvc.prompts.reads import PromptReads
from configsvc.releases import ConfigService
from configsvc.releases.payloads import SetStable
from configsvc.rollouts import RolloutOps, RouteWatch, StartRollout
from configsvc.server.app import build_app
from holdfast.keyspace import HealthSnapshot, Keyspace, Release
from holdfast.keyspace.policy import HealthPolicy
from holdfast.store import Put
from holdfast.store.etcd import EtcdStore
from holdfast_devtools.etcd_local import EtcdNode
from tests.unit.test_health_gate import sig

pytestmark = pytest.mark.etcd
AGENT = "support"
ADMIN, VIEWER = "admin-token-0123456789", "viewer-token-0123456789"
FLEET = 1000


@dataclass
class Site:
    server: TestServer
    console: Console
    service: ConfigService
    fleet: FleetHealth
    routes: RouteWatch
    store: EtcdStore

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def open_site(endpoint: str, env: str) -> Site:
    store = EtcdStore([endpoint])
    await store.connect()
    ks = Keyspace(env)
    service = ConfigService(store, ks)
    fleet, routes = FleetHealth(store, ks), RouteWatch(store, ks)
    authorizer = Authorizer(ADMIN, (TokenEntry("vera", Role.VIEWER, token_digest(VIEWER)),),
                            require_token_for_reads=True)  # fmt: skip
    console = Console(
        service=service, fleet=fleet, gate=PolicyGate(fleet), routes=routes,
        authorizer=authorizer, secret=b"s" * 32,
        ops=ConcernOps(BudgetOps(service), FlagOps(service), ContractOps(service),
                       PromptReads(service), ExperimentOps(service)),
    )  # fmt: skip
    metrics = MetricsEndpoint(ControlPlaneCollector(routes=routes, fleet=fleet, elections={},
                                                    extra=console.metric_families))  # fmt: skip
    app = build_app(service, authorizer, extra=[metrics], mounts=[console.mount])
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    await fleet.start()
    await routes.start()
    return Site(server, console, service, fleet, routes, store)


async def close_site(site: Site) -> None:
    await site.console.close()
    await site.server.close()
    await site.routes.close()
    await site.fleet.close()
    await site.store.close()


@pytest.fixture
async def site(etcd_node: EtcdNode, etcd_env: str) -> AsyncIterator[Site]:
    s = await open_site(etcd_node.client_url, etcd_env)
    ks = s.service.keyspace
    for name in ("r1", "r2"):
        release = Release(agent=AGENT, name=name, model=f"m-{name}", base_url="http://h/v1")
        await s.store.put(ks.release(AGENT, name), release.encode())
    await s.service.set_stable(AGENT, SetStable(release="r1", reason="first"), "token:e2e")
    await until(lambda: AGENT in s.routes.routes)
    yield s
    await close_site(s)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get(site: Site, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(site.url(path), headers=bearer(VIEWER) if headers is None else headers,
                            allow_redirects=False) as resp:  # fmt: skip
            return resp.status, await resp.text(), resp.headers


async def test_signing_in_and_what_a_session_opens(site: Site) -> None:
    status, _, headers = await get(site, "/ui/agents/support", headers={})
    assert status == 303 and headers["Location"] == "/ui/login?next=/ui/agents/support"
    status, body, headers = await get(site, "/ui/login?next=/ui/audit", headers={})
    assert status == 200 and 'name="token"' in body
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    own = f"http://{site.server.host}:{site.server.port}"
    async with aiohttp.ClientSession() as http:
        login = site.url("/ui/login")
        form = {"token": VIEWER, "next": "/ui/audit"}
        async with http.post(login, data=form, headers={"Origin": "http://evil.example"},
                             allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 403 and COOKIE not in resp.cookies
        async with http.post(login, data={"token": "nope", "next": "/ui"},
                             headers={"Origin": own}, allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 401 and "not accepted" in await resp.text()
        async with http.post(login, data=form, headers={"Origin": own},
                             allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 303 and resp.headers["Location"] == "/ui/audit"
            raw = resp.headers["Set-Cookie"]
            morsel = resp.cookies[COOKIE]
    for attribute in ("HttpOnly", "Path=/ui", "SameSite=Strict", "Secure", "Max-Age=43200"):
        assert attribute.lower() in raw.lower(), raw
    session = {"Cookie": f"{COOKIE}={morsel.value}"}
    status, body, _ = await get(site, "/ui", headers=session)
    assert status == 200 and "vera (viewer)" in body and f'href="/ui/agents/{AGENT}"' in body
    # the cookie is the console's only: the API still wants its bearer token
    assert (await get(site, "/v1/status", headers=session))[0] == 401
    assert (await get(site, "/ui/events?view=overview", headers={}))[0] == 401
    tampered = {"Cookie": f"{COOKIE}={morsel.value[:-3]}abc"}
    assert (await get(site, "/ui", headers=tampered))[0] == 303
    assert (await get(site, "/ui", headers=bearer(VIEWER)))[0] == 200  # curl's way in
    async with aiohttp.ClientSession() as http:
        async with http.post(site.url("/ui/logout"), headers=session,
                             allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 303 and "max-age=0" in resp.headers["Set-Cookie"].lower()


def snapshot(i: int, at: float) -> HealthSnapshot:
    return HealthSnapshot(
        sidecar_id=f"{AGENT}.sc-{i:04d}", agent=AGENT, at=at, started_at=at - 100,
        config_revision=1 if i % 100 == 0 else 10**9, pins_cached=3,
        signals=(sig("r1", 10 + i % 5, errors=i % 2), sig("r2", 5, category="billing")),
    )  # fmt: skip


async def read_events(resp: aiohttp.ClientResponse, want: Callable[[dict[str, str]], bool],
                      timeout: float) -> dict[str, str]:  # fmt: skip
    """Fragments of the first event ``want`` accepts."""
    async with asyncio.timeout(timeout):
        event = ""
        async for line in resp.content:
            text = line.decode()
            if text.startswith("data: "):
                event = text[6:]
            elif text == "\n" and event:
                parts: dict[str, str] = json.loads(event)
                if want(parts):
                    return parts
                event = ""
    raise AssertionError("the stream ended")


async def test_an_agent_of_1000_sidecars_is_paged_and_its_rollout_pushed_live(site: Site) -> None:
    ks = site.service.keyspace
    now = time.time()
    puts = [Put(ks.health(s.sidecar_id), s.encode()) for s in map(lambda i: snapshot(i, now),
                                                                  range(FLEET))]  # fmt: skip
    for start in range(0, FLEET, 100):
        await site.store.txn(puts[start : start + 100])
    await until(lambda: len(site.fleet.beats(AGENT)) == FLEET)
    site.console.sampler.sample_once()

    status, overview, _ = await get(site, "/ui")
    assert status == 200 and "1000" in overview and "sc-0001" not in overview
    status, page, _ = await get(site, f"/ui/agents/{AGENT}")
    assert status == 200 and "sc-0001" not in page and len(page) < 100_000
    assert "<strong>1000</strong> live" in page and "10 behind the route" in page
    assert 'data-series="error_rate"' in page and page.count("<svg") >= 8  # charts, r1 and r2
    status, first, _ = await get(site, f"/ui/agents/{AGENT}/sidecars?page=1")
    rows = re.findall(r"<code>(support\.sc-\d+)</code>", first)
    assert len(rows) == 50 and "page 1 of 20" in first
    assert rows[:10] == [f"support.sc-{i:04d}" for i in range(0, 1000, 100)]  # behind: first
    status, last, _ = await get(site, f"/ui/agents/{AGENT}/sidecars?page=20")
    assert len(re.findall(r"<code>support\.sc-\d+</code>", last)) == 50

    # a live page hears of the rollout as soon as the route changes, without a reload
    version = site.console.feed.version
    async with aiohttp.ClientSession() as http:
        async with http.get(site.url(f"/ui/events?view=agent&agent={AGENT}&since={version}"),
                            headers=bearer(VIEWER)) as resp:  # fmt: skip
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            policy = HealthPolicy(max_error_rate_delta=0.05)
            await RolloutOps(site.service).start(
                AGENT,
                StartRollout(
                    release="r2", steps=(10.0, 50.0, 100.0), interval_s=3600.0, policy=policy
                ),
                "token:e2e",
            )
            parts = await read_events(resp, lambda p: "r2</strong> running" in p["route"], 10)
    assert "step 1/3" in parts["route"] and set(parts) == {"route", "releases", "fleet"}
    status, metrics, _ = await get(site, "/metrics")
    assert 'holdfast_rollout_state{agent="support",release="r2",state="running"} 1.0' in metrics
    assert 'holdfast_fleet_sidecars{agent="support"} 1000.0' in metrics
    assert 'holdfast_fleet_sidecars_behind{agent="support"} 10.0' in metrics
    assert 'holdfast_rollout_canary_percent{agent="support",release="r2"} 10.0' in metrics


async def test_bad_input_is_a_page_that_says_so(site: Site) -> None:
    for path, status, words in (
        ("/ui/agents/no%20spaces", 400, "is not an agent name"),
        ("/ui/agents/nobody", 404, "no agent"),
        ("/ui/agents/support/sidecars?page=0", 400, "page must be"),
        ("/ui/audit?since=yesterday", 400, "since"),
        ("/ui/audit?bogus=1", 400, "unknown filter"),
    ):
        got, body, headers = await get(site, path)
        assert (got, headers["Content-Type"].split(";")[0]) == (status, "text/html"), path
        assert words in body and "Content-Security-Policy" in headers
    assert (await get(site, "/ui/events?view=nothing"))[0] == 400
    assert (await get(site, "/ui/static/../console.py"))[0] == 404


async def test_the_audit_trail_filters_and_pages(site: Site) -> None:
    for i in range(60):
        actor = "token:alice" if i % 2 else "token:bob"
        await site.service.set_stable(
            AGENT, SetStable(release="r2" if i % 2 else "r1", reason=f"flip {i}"), actor
        )
    status, page, _ = await get(site, "/ui/audit?actor=alice&kind=route")
    revisions = [int(r) for r in re.findall(r"<tr>\s*<td>(\d+)</td>", page)]
    assert status == 200 and len(revisions) == 30 and revisions == sorted(revisions, reverse=True)
    assert "<td>token:bob</td>" not in page and page.count("<td>token:alice</td>") == 30
    status, first, _ = await get(site, "/ui/audit?kind=route.set_stable")
    assert len(re.findall(r"<tr>\s*<td>\d+</td>", first)) == 50
    older = re.search(r'href="\?([^"]+)" rel="next"', first)
    assert older is not None
    status, second, _ = await get(site, f"/ui/audit?{older.group(1).replace('&amp;', '&')}")
    assert (
        len(re.findall(r"<tr>\s*<td>\d+</td>", second)) == 10
    )  # 59 changes (the first flip set r1 again: no change) + the first stable
    assert (await get(site, "/ui/audit?agent=other"))[1].count("<tr>") == 0


async def test_concern_pages_and_etcd_away(fresh_etcd: EtcdNode, etcd_env: str) -> None:
    site = await open_site(fresh_etcd.client_url, etcd_env)
    try:
        ops = site.console.ops
        await ops.budgets.set(
            "agent:support", SetBudget.parse(b'{"tokens": 1000, "window": "1h"}'), "token:e2e"
        )
        flagd = {"flags": {"new-ui": {"state": "ENABLED", "variants": {"on": True, "off": False},
                                      "defaultVariant": "off"}}}  # fmt: skip
        await ops.flags.apply(flagd, source="f.json", raw=json.dumps(flagd).encode(),
                              actor="token:e2e", reason="test")  # fmt: skip
        pages = (("/ui/budgets", "agent:support"), ("/ui/flags", "new-ui"),
                 ("/ui/contracts", "No tool contract"), ("/ui/prompts", "No managed"))  # fmt: skip
        for path, words in pages:
            status, body, _ = await get(site, path)
            assert status == 200 and words in body, path
        fresh_etcd.pause()
        try:
            status, body, _ = await get(site, "/ui/budgets")
            assert status == 503 and "etcd" in body
            await until(lambda: not site.routes.connected, timeout=30)
            status, body, _ = await get(site, "/ui")
            assert status == 200 and "cannot reach etcd" in body
        finally:
            fresh_etcd.resume()
    finally:
        await close_site(site)
