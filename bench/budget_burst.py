"""Budgets under a burst: how much of a budget a burst gets, with queueing and without.

One etcd, configsvc (budget controller), the fake upstream and two sidecars (prompts estimated
in ``tokens``: the release's model is ``gpt-4o-mini``), real processes.
Each scenario gives one fleet-wide scope (``tenant:<scenario>``, so scenarios share nothing) a
budget worth N requests and sends 3N... requests at once to the two sidecars: half streamed,
``max_tokens`` 100 each, each really using ~21 tokens (11 prompt + 10 completion, the fake's
count). Every pair of scenarios runs twice in the same run, on the same fleet:

* **queueing** -- ``--queue-timeout 10 --fit-cap 8``: a request that does not fit yet waits
  for reservations in flight to settle and for slices to move, and the last ones are admitted
  with their cap lowered to what is left;
* **immediate** -- ``--queue-timeout 0`` (``--fit-cap`` off): refused at once when the worst
  case does not fit now -- the behaviour before queueing.

Reported per scenario: share of the budget used (charged by the sidecars), requests served and
refused, p99 time until the answer's head (the agent's view of the wait; a refusal's head is
its 429), and overspend: provider-side tokens (the fake's own count) minus the limit.

``python -m bench.budget_burst`` replaces its section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import uvloop

from bench.fleet import AGENT, Api, fleet, status
from bench.sections import markers, publish
from bench.stats import percentile

START, END = markers("budget-burst")
MODEL: Final = "gpt-4o-mini"  # a family whose tokenizer ships offline
PER_REQUEST: Final = 21
SCENARIOS: Final = ((20, 60), (20, 600), (200, 600))  # (budget worth N requests, burst)
MODES: Final = {
    "queueing": {"queue_timeout": 10.0, "fit_cap": 8},
    "immediate": {"queue_timeout": 0.0},
}


@dataclass(frozen=True)
class Outcome:
    mode: str
    worth: int
    burst: int
    limit: int
    used: int  # charged by the sidecars (budget usage)
    produced: int  # the provider's own count
    served: int
    refused_spent: int
    refused_busy: int
    p99_head: float
    elapsed: float
    wait_mean: float = 0.0  # seconds, the sidecars' own count of waits for room
    wait_max: float = 0.0

    @property
    def share(self) -> float:
        return self.used / self.limit


async def one(http: aiohttp.ClientSession, url: str, tenant: str, i: int) -> tuple[int, str, float]:
    payload = {
        "model": AGENT,
        "stream": i % 2 == 0,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": f"request number {i}, tell me a story"}],
    }
    headers = {"X-Holdfast-Tenant": tenant, "X-Holdfast-Session": f"{tenant}-{i}"}
    started = time.monotonic()
    async with http.post(f"{url}/v1/chat/completions", json=payload, headers=headers) as resp:
        head = time.monotonic() - started
        if resp.status != 200:
            body = await resp.json()
            return resp.status, str(body["error"]["code"]), head
        await resp.read()
        return 200, "", head


async def produced(http: aiohttp.ClientSession, fake: str) -> int:
    async with http.get(f"{fake}/_control/stats") as resp:
        m = (await resp.json())["models"].get(MODEL, {})
    return int(m.get("prompt_tokens", 0) + m.get("completion_tokens", 0))


async def scenario(
    http: aiohttp.ClientSession, api: Api, fake: str, urls: list[str], mode: str, worth: int,
    burst: int,
) -> Outcome:  # fmt: skip
    tenant = f"{mode}-{worth}-{burst}"
    limit = worth * PER_REQUEST
    await api.call(
        "PUT",
        f"/v1/budgets/tenant:{tenant}",
        {"tokens": limit, "window": "day", **MODES[mode]},
    )
    await _wait_slices(http, urls, f"tenant:{tenant}")
    before = await produced(http, fake)
    started = time.monotonic()
    results = await asyncio.gather(
        *(one(http, urls[i % len(urls)], tenant, i) for i in range(burst))
    )
    elapsed = time.monotonic() - started
    usage: dict[str, Any] = {}
    for _ in range(100):  # reservations settle, spend reports reach the controller
        await asyncio.sleep(0.1)
        usage = (await api.call("GET", f"/v1/budgets/tenant:{tenant}/usage"))["usage"]
        if usage["reserved"] == 0 and usage["waiting"] == 0:
            break
    codes = [code for status_, code, _ in results if status_ != 200]
    return Outcome(
        mode=mode,
        worth=worth,
        burst=burst,
        limit=limit,
        used=int(usage["used"]),
        produced=await produced(http, fake) - before,
        served=sum(1 for s, _, _ in results if s == 200),
        refused_spent=codes.count("budget_exhausted"),
        refused_busy=codes.count("budget_busy"),
        p99_head=percentile([h for _, _, h in results], 99),
        elapsed=elapsed,
        wait_mean=usage["wait_mean_ms"] / 1000,
        wait_max=usage["wait_max_ms"] / 1000,
    )


async def _wait_slices(http: aiohttp.ClientSession, urls: list[str], scope: str) -> None:
    for url in urls:
        for _ in range(300):
            body = await status(http, url)
            scopes = (body.get("budgets") or {}).get("scopes", [])
            if any(s["scope"] == scope and s["allowance"] > 0 for s in scopes):
                break
            await asyncio.sleep(0.05)


async def run() -> list[Outcome]:
    args = (
        "--budget-report-interval", "0.2", "--budget-prompt-estimator", "tokens",
        "--max-concurrent-requests", "2000",
    )  # fmt: skip
    with fleet("bench-burst", 2, *args) as running:
        connector = aiohttp.TCPConnector(limit=0)  # the whole burst at once
        async with aiohttp.ClientSession(connector=connector) as http:
            api = running.api(http)
            await api.create_release("r1", MODEL, f"{running.fake_url}/v1")
            await api.set_stable("r1")
            async with http.put(
                f"{running.fake_url}/_control/models/{MODEL}",
                json={"completion_tokens": 10, "token_interval_ms": 20, "latency_ms": 150},
            ) as r:
                r.raise_for_status()
            out = []
            for worth, burst in SCENARIOS:
                for mode in MODES:
                    out.append(
                        await scenario(
                            http, api, running.fake_url, running.urls, mode, worth, burst
                        )
                    )
            return out


def render(outcomes: list[Outcome]) -> str:
    rows = [
        f"| {o.worth} ({o.limit} tokens) | {o.burst} | {o.mode} | {o.share:.1%} | {o.served} | "
        f"{o.refused_spent} + {o.refused_busy} | {o.wait_mean:.2f} / {o.wait_max:.2f} | "
        f"{o.p99_head:.2f} | {o.produced - o.limit} |"
        for o in outcomes
    ]
    return "\n".join(
        [
            START,
            "## Budgets under a burst: queueing against immediate refusal",
            "",
            f"`python -m bench.budget_burst`, {time.strftime('%Y-%m-%d %H:%M UTC')}, on a shared",
            "2-core machine (other work running). Two sidecars (`--budget-prompt-estimator",
            "tokens`) share a fleet-wide budget worth N requests (N x 21 tokens); a burst of",
            "requests at once, half streamed,",
            "`max_tokens` 100 each, ~21 tokens really used each. *queueing*: `--queue-timeout 10",
            "--fit-cap 8`; *immediate*: `--queue-timeout 0` (refused at once when the worst case",
            "does not fit now, as before queueing). Refused: budget spent + could not wait. Wait:",
            "mean / longest wait for room, seconds, as the sidecars counted it (`budget usage`);",
            "p99 head: the agent's view, seconds until the answer's head (a refusal's head is its",
            "429), which adds the body read, the first turn's pin write and the provider's first",
            "byte. Overspend: the provider's own count of tokens minus the limit.",
            "",
            "| budget worth | burst | mode | budget used | served | refused | wait s | "
            "p99 head s | overspend |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Immediate refusal leaves most of a budget unused in a burst: every request reserves",
            "its worst case (prompt estimate + 100), each sidecar holds a part of the limit, and",
            "a request that does not fit at that instant is refused although the reservations in",
            "its way settle at a fifth of their size a moment later. Queueing waits for them, and",
            "for the controller to move slices to the sidecar whose requests wait; the last",
            "requests get their cap lowered to what is left (`--fit-cap`). Overspend stays ≤ 0:",
            "every admission still reserves its whole worst case inside a slice.",
            END,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m bench.budget_burst",
        description="Budgets under a burst (real processes): budget used, refusals, p99 wait "
        "and overspend with queueing and with immediate refusal, side by side; replaces the "
        "budget-burst section of bench/RESULTS.md.",
    ).parse_args(argv)
    return publish("budget-burst", render(uvloop.run(run())))


if __name__ == "__main__":
    raise SystemExit(main())
