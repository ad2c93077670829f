"""Token budgets: admission cost on the request path, and overspend of the fleet scenario.

1. In-process, no network: the budget filter's ``open`` + ``on_body`` + ``close`` for one
   non-streamed request with a session budget and a fleet-wide agent budget (slice held),
   next to the same request with no budget configured (the filter's early return), and with
   both budgets limiting tokens *and* cost (a second meter per scope in micro-dollars, the
   release priced from the fleet's price table).
2. Real processes: one etcd, configsvc (budget controller), the fake upstream and 5 sidecars
   sharing one agent budget; 200 concurrent streams, a quarter cut by the client after 6
   chunks, a quarter on a release whose provider resets the stream after 9 tokens. What the
   sidecars charged (prompt and completion, per release) is compared with what the fake
   produced, and the provider-side spend with the limit and the documented bound.

``python -m bench.budgets`` replaces its section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
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


def admission_cost(kind: str, rounds: int = ROUNDS, per_round: int = PER_ROUND) -> list[float]:
    """Microseconds per request (open + body + close), one figure per round."""
    config, release = _config(kind)
    with_budgets = kind != "none"
    ledger = Ledger(agent=AGENT)
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
    figures = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(per_round):
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
        figures.append((time.perf_counter() - started) / per_round * 1e6)
    return figures


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
        result = "done"
        async for line in resp.content:
            if b'"content":' in line and b'"content":""' not in line:
                seen += 1
                if cut is not None and seen >= cut:
                    resp.close()
                    return "cut"
            if b'"error"' in line:
                result = "reset"  # the provider broke the stream (reported in-band)
        return result


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


def _charged(text: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("holdfast_budget_charged_tokens_total{") and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _tally(
    http: aiohttp.ClientSession, fake: str, urls: list[str], results: list[str], elapsed: float
) -> dict[str, Any]:
    spent = 0.0
    charged = {"prompt": 0.0, "completion": 0.0, "r1": 0.0, "r2": 0.0}
    for url in urls:
        async with http.get(f"{url}/status") as resp:
            scopes = (await resp.json())["budgets"]["scopes"]
        spent += sum(s["spent"] for s in scopes)
        async with http.get(f"{url}/metrics") as resp:
            text = await resp.text()
        for part in ("prompt", "completion"):
            charged[part] += _charged(text, part=part)
        for release in ("r1", "r2"):
            charged[release] += _charged(text, release=release, part="completion")
    async with http.get(f"{fake}/_control/stats") as resp:
        models = (await resp.json())["models"]
    one, two = models.get("m-one", {}), models.get("m-two", {})
    produced_prompt = sum(m["prompt_tokens"] for m in models.values())
    produced_completion = sum(m["completion_tokens"] for m in models.values())
    counts = {k: results.count(k) for k in ("done", "cut", "reset", "refused")}
    return {
        "spent": int(spent),
        "charged_prompt": int(charged["prompt"]),
        "charged_completion": int(charged["completion"]),
        "produced_prompt": produced_prompt,
        "produced_completion": produced_completion,
        "r1": (int(charged["r1"]), one.get("completion_tokens", 0)),
        "r2": (int(charged["r2"]), two.get("completion_tokens", 0)),
        "resets": two.get("streams_reset", 0),
        "counts": counts,
        "elapsed": elapsed,
    }


def render(costs: dict[str, list[float]], fleet: dict[str, Any]) -> str:
    def row(label: str, v: list[float]) -> str:
        return f"| {label} | {statistics.median(v):.1f} | {percentile(v, 90):.1f} |"

    c = fleet["counts"]
    produced = fleet["produced_prompt"] + fleet["produced_completion"]
    (r1_charged, r1_produced), (r2_charged, r2_produced) = fleet["r1"], fleet["r2"]
    lost = r2_produced - r2_charged
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
            f"tokens per rolling hour; {REQUESTS} concurrent streams: {c['done']} read to the end,",
            f"{c['reset']} cut by the provider's reset ({fleet['resets']} resets in all), "
            f"{c['cut']} cut by the",
            f"client, {c['refused']} refused with 429; {fleet['elapsed']:.1f} s in all.",
            "",
            "| measure | tokens |",
            "|---|---|",
            f"| limit | {LIMIT} |",
            f"| charged to the budget (all sidecars): prompt + completion | {fleet['spent']} "
            f"({fleet['charged_prompt']} + {fleet['charged_completion']}) |",
            f"| produced by the provider (the fake's count): prompt + completion | {produced} "
            f"({fleet['produced_prompt']} + {fleet['produced_completion']}) |",
            f"| completion charged / produced, release without resets (cut streams included) | "
            f"{r1_charged} / {r1_produced} |",
            f"| completion charged / produced, release whose provider resets | "
            f"{r2_charged} / {r2_produced} |",
            f"| overspend: provider-side spend - limit | {produced - LIMIT} |",
            f"| bound: 0 admitted beyond the limit + tokens destroyed by resets (≤ 1 each; "
            f"{fleet['resets']} resets) | {lost} |",
            "",
            "Reservations are worst cases (prompt as UTF-8 bytes + the written cap), so the",
            "budget is never over-admitted; a negative overspend is budget held back by",
            "reservations of requests in flight when the slices ran out, plus the prompt",
            "estimates charged for streams without usage (the bytes estimate is an upper bound",
            "of the provider's count). Streams the client cut are charged exactly: the sidecar",
            "half-closes the provider connection and reads all it wrote until it stopped. A",
            "provider that resets its own stream can destroy a token it wrote in the same",
            "instant, which the fake counts as produced.",
            "",
            "A cost limit adds a second meter per scope (micro-dollars), checked and reserved in",
            "the same synchronous step as the tokens, plus one price lookup in the fleet table.",
            END,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m bench.budgets",
        description="Token budgets: admission cost on the request path (in-process) and the "
        f"fleet scenario ({SIDECARS} sidecars, {REQUESTS} streams, real processes); replaces "
        "the budgets section of bench/RESULTS.md.",
    ).parse_args(argv)
    costs = {kind: admission_cost(kind) for kind in WINDOWS}
    fleet = uvloop.run(scenario())
    section = render(costs, fleet)
    print(section)
    replace_section("budgets", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
