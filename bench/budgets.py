"""Token budgets: admission cost on the request path, and overspend of the fleet scenario.

1. In-process, no network: the budget filter's ``open`` + ``on_body`` + ``close`` for one
   non-streamed request with a session budget and a fleet-wide agent budget (slice held),
   next to the same request with no budget configured (the filter's early return), and with
   both budgets limiting tokens *and* cost (a second meter per scope in micro-dollars, the
   release priced from the fleet's price table).
2. Real processes: one etcd, configsvc (budget controller), the fake upstream and 5 sidecars
   sharing one agent budget; 200 concurrent streams, a quarter cut by the client after 6
   chunks, a quarter on a release whose provider resets the stream after 9 tokens. Spend is
   compared with the limit, and the completion tokens charged with those the fake produced.

``python -m bench.budgets`` replaces its section of bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import aiohttp
import uvloop
from prometheus_client import CollectorRegistry

from bench.sections import markers, replace_section
from bench.stats import percentile
from holdfast.devtools import procs
from holdfast.devtools.etcd_local import EtcdNode
from holdfast.keyspace import Keyspace, Release, Route
from holdfast.keyspace.budget import Budget, meter_id
from holdfast.keyspace.price import Price, PriceTable
from holdfast.store import KeyValue
from sidecar.budget_filter import BudgetFilter, BudgetOptions
from sidecar.budget_ledger import Ledger
from sidecar.budget_metrics import BudgetMetrics
from sidecar.config import ConfigState
from sidecar.exchange import Chain, Exchange, Outcome
from sidecar.kinds import CONFIG_KINDS
from sidecar.routing import Resolved

AGENT: Final = "bench"
KS: Final = Keyspace("dev")
ROUNDS: Final = 30
PER_ROUND: Final = 2000
SIDECARS: Final = 5
REQUESTS: Final = 200
LIMIT: Final = 6000
CAP: Final = 30
START, END = markers("budgets")
ANSWER: Final = json.dumps(
    {
        "choices": [{"message": {"role": "assistant", "content": "fine weather"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
).encode()


WINDOWS: Final = {
    "none": ("", ""),
    "calendar": ("day", "month"),
    "rolling": ("1h", "1d"),
    "cost": ("day", "month"),
}


def _config(kind: str) -> tuple[ConfigState, Release]:
    config = ConfigState(KS, AGENT, kinds=CONFIG_KINDS)
    release = Release(agent=AGENT, name="r1", model="m1", base_url="http://127.0.0.1:1/v1")
    records = {
        KS.release(AGENT, "r1"): release.encode(),
        KS.route(AGENT): Route(agent=AGENT, stable="r1").encode(),
    }
    session_window, agent_window = WINDOWS[kind]
    cost = 10**14 if kind == "cost" else 0
    if session_window:
        for b in (
            Budget(scope="session:s1", tokens=10**12, window=session_window, cost=cost),
            Budget(scope=f"agent:{AGENT}", tokens=10**12, window=agent_window, cost=cost),
        ):
            records[KS.budget(b.scope)] = b.encode()
    if cost:
        table = PriceTable(prices={"m1": Price(2_500_000, 10_000_000)})
        records[KS.prices()] = table.encode()
    kvs = {k: KeyValue(k, v, 1, 1, 1) for k, v in records.items()}
    config.apply_reset(1, kvs, "etcd")
    return config, release


def admission_cost(kind: str) -> list[float]:
    """Microseconds per request (open + body + close), one figure per round."""
    config, release = _config(kind)
    with_budgets = kind != "none"
    ledger = Ledger()
    options = BudgetOptions(agent=AGENT, default_cap=256, estimator="bytes")
    flt = BudgetFilter(ledger, config, options, BudgetMetrics(CollectorRegistry(), AGENT, ledger))
    resolved = Resolved(release=release, revision=1, session="s1", kind="pinned")
    body = {"model": "m1", "messages": [{"role": "user", "content": "how is the weather " * 8}]}
    done = Outcome("ok", 200, 0.01, True)
    if with_budgets:  # hold a slice of the fleet scope, as the controller would hand out
        assert config.current is not None
        ledger.sync(config.current.of_kind("budgets"), time.time())
        span = ledger.meters[f"agent:{AGENT}"].tally.span.id
        for unit in ("tokens", "usd"):
            ledger.set_grant(meter_id(f"agent:{AGENT}", unit), span, 10**12, 0)
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(PER_ROUND):
            exchange = Exchange(
                operation="chat",
                body=dict(body),
                resolved=resolved,
                request_id="r",
                headers={},
                stream=False,
            )
            chain = Chain.open([flt], exchange)
            chain.body(200, ANSWER)
            chain.close(done)
        rounds.append((time.perf_counter() - started) / PER_ROUND * 1e6)
    return rounds


class Api:
    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http, self.url = http, url
        self.headers = {"Authorization": f"Bearer {token}", "X-Holdfast-Actor": "bench"}

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.http.request(
            method, self.url + path, json=body, headers=self.headers
        ) as resp:
            data = await resp.json()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data


async def stream(http: aiohttp.ClientSession, url: str, i: int, cut: int | None) -> str:
    payload = {
        "model": AGENT,
        "stream": True,
        "messages": [{"role": "user", "content": f"request number {i}, tell me a story"}],
    }
    async with http.post(
        f"{url}/v1/chat/completions", json=payload, headers={"X-Holdfast-Session": f"s-{i}"}
    ) as resp:
        if resp.status == 429:
            return "refused"
        seen = 0
        async for line in resp.content:
            if b'"content":' in line and b'"content":""' not in line:
                seen += 1
                if cut is not None and seen >= cut:
                    resp.close()
                    return "cut"
        return "done"


async def scenario() -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-budgets-"))
    token = secrets.token_hex(8)
    with EtcdNode("bench-budgets") as node:
        fake = procs.fakellm(base / "logs").start()
        svc = procs.configsvc(base / "logs", [node.client_url], "dev", token).start()
        sides = [
            procs.sidecar(
                base / "logs",
                AGENT,
                [node.client_url],
                "dev",
                base / f"s{i}",
                "--budget-report-interval",
                "0.2",
                name=f"s{i}",
            ).start()
            for i in range(SIDECARS)
        ]
        try:
            async with aiohttp.ClientSession() as http:
                api = Api(http, svc.url, token)
                for name, model in (("r1", "m-one"), ("r2", "m-two")):
                    await api.call(
                        "POST",
                        f"/v1/agents/{AGENT}/releases",
                        {"release": name, "model": model, "base_url": f"{fake.url}/v1"},
                    )
                await api.call("PUT", f"/v1/agents/{AGENT}/route/stable", {"release": "r1"})
                await api.call(
                    "PUT", f"/v1/agents/{AGENT}/canary", {"release": "r2", "percent": 25}
                )
                await api.call(
                    "PUT",
                    f"/v1/budgets/agent:{AGENT}",
                    {"tokens": LIMIT, "window": "1h", "request_cap": CAP},
                )
                for model, extra in (("m-one", {}), ("m-two", {"reset_after_tokens": 9})):
                    async with http.put(
                        f"{fake.url}/_control/models/{model}",
                        json={"token_interval_ms": 25, "completion_tokens": CAP, **extra},
                    ) as r:
                        r.raise_for_status()
                await _wait_slices(http, [s.url for s in sides])
                started = time.perf_counter()
                results = await asyncio.gather(
                    *(
                        stream(http, sides[i % SIDECARS].url, i, 6 if i % 4 == 1 else None)
                        for i in range(REQUESTS)
                    )
                )
                elapsed = time.perf_counter() - started
                await asyncio.sleep(1.0)  # reservations settle, spend reports land
                return await _tally(http, fake.url, [s.url for s in sides], results, elapsed)
        finally:
            for proc in [*sides, svc, fake]:
                proc.stop()


async def _wait_slices(http: aiohttp.ClientSession, urls: list[str]) -> None:
    for url in urls:
        for _ in range(300):
            async with http.get(f"{url}/status") as resp:
                body = await resp.json()
            if any(s["allowance"] > 0 for s in (body.get("budgets") or {}).get("scopes", [])):
                break
            await asyncio.sleep(0.05)


async def _tally(
    http: aiohttp.ClientSession, fake: str, urls: list[str], results: list[str], elapsed: float
) -> dict[str, Any]:
    spent = charged = 0.0
    for url in urls:
        async with http.get(f"{url}/status") as resp:
            scopes = (await resp.json())["budgets"]["scopes"]
        spent += sum(s["spent"] for s in scopes)
        async with http.get(f"{url}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith("holdfast_budget_charged_tokens_total{") and (
                    'part="completion"' in line
                ):
                    charged += float(line.rsplit(" ", 1)[1])
    async with http.get(f"{fake}/_control/stats") as resp:
        models = (await resp.json())["models"]
    produced = sum(m["completion_tokens"] for m in models.values())
    resets = models.get("m-two", {}).get("streams_reset", 0)
    counts = {k: results.count(k) for k in ("done", "cut", "refused")}
    return {
        "spent": int(spent),
        "charged": int(charged),
        "produced": produced,
        "resets": resets,
        "counts": counts,
        "elapsed": elapsed,
        "true_spend": int(spent - charged + produced),
    }


def render(costs: dict[str, list[float]], fleet: dict[str, Any]) -> str:
    def row(label: str, v: list[float]) -> str:
        return f"| {label} | {statistics.median(v):.1f} | {percentile(v, 90):.1f} |"

    c = fleet["counts"]
    return "\n".join(
        [
            START,
            "## Token budgets",
            "",
            f"`python -m bench.budgets`, {time.strftime('%Y-%m-%d %H:%M UTC')}.",
            "",
            "Admission cost on the request path, in-process: the budget filter's open + body +",
            f"close per request, µs (median and p90 of {ROUNDS} rounds of {PER_ROUND} requests).",
            "",
            "| request | p50 µs | p90 µs |",
            "|---|---|---|",
            row("no budget configured", costs["none"]),
            row("session `day` + fleet-wide agent `month` (calendar)", costs["calendar"]),
            row("session `1h` + fleet-wide agent `1d` (rolling, 60 sub-buckets)", costs["rolling"]),
            row("as calendar, each scope limiting tokens and cost (USD)", costs["cost"]),
            "",
            f"Fleet scenario, real processes: {SIDECARS} sidecars share `agent:{AGENT}` = {LIMIT}",
            f"tokens per rolling hour; {REQUESTS} concurrent streams: {c['done']} read to the end",
            f"({fleet['resets']} of them cut by the provider's reset), {c['cut']} cut by the",
            f"client, {c['refused']} refused with 429; {fleet['elapsed']:.1f} s in all.",
            "",
            "| measure | tokens |",
            "|---|---|",
            f"| limit | {LIMIT} |",
            f"| charged to the budget (all sidecars) | {fleet['spent']} |",
            f"| completion tokens charged / produced by the provider | "
            f"{fleet['charged']} / {fleet['produced']} |",
            f"| overspend: provider-side spend - limit | {fleet['true_spend'] - LIMIT} |",
            f"| bound: 0 admitted beyond the limit + ≤ 1 per provider reset "
            f"({fleet['resets']} resets) | {fleet['resets']} |",
            "",
            "Reservations are worst cases (prompt as UTF-8 bytes + the written `max_tokens`), so",
            "the budget is never over-admitted; a negative overspend is budget held back by",
            "reservations of requests in flight when the slices ran out. Streams the client cut",
            "are charged exactly (the sidecar counts what the provider already sent before it",
            "closes); a provider that resets its own stream can destroy a token it wrote in the",
            "same instant, which the fake counts as produced.",
            "",
            "A cost limit adds a second meter per scope (micro-dollars), checked and reserved in",
            "the same synchronous step as the tokens, plus one price lookup in the fleet table.",
            END,
        ]
    )


def main() -> int:
    costs = {kind: admission_cost(kind) for kind in WINDOWS}
    fleet = uvloop.run(scenario())
    section = render(costs, fleet)
    print(section)
    replace_section("budgets", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
