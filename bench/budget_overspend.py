"""Token budgets across a fleet: how far real processes overspend a shared budget.

One etcd, configsvc (budget controller), the fake upstream and SIDECARS sidecars sharing one
agent budget; REQUESTS concurrent streams, a quarter cut by the client after 6 chunks, a quarter
on a release whose provider resets the stream after 9 tokens. What the sidecars charged (prompt
and completion, per release) is tallied next to what the fake produced. Part of
``python -m bench.budgets``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import aiohttp

from bench.fleet import AGENT, fleet, status

SIDECARS: Final = 5
REQUESTS: Final = 200
LIMIT: Final = 6000
CAP: Final = 30


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
    """Run the streams on a fresh fleet; what was charged and produced (see ``_tally``)."""
    with fleet("bench-budgets", SIDECARS, "--budget-report-interval", "0.2") as running:
        async with aiohttp.ClientSession() as http:
            api = running.api(http)
            fake, urls = running.fake_url, running.urls
            for name, model in (("r1", "m-one"), ("r2", "m-two")):
                await api.create_release(name, model, f"{fake}/v1")
            await api.set_stable("r1")
            await api.call("PUT", f"/v1/agents/{AGENT}/canary", {"release": "r2", "percent": 25})
            await api.call(
                "PUT",
                f"/v1/budgets/agent:{AGENT}",
                {"tokens": LIMIT, "window": "1h", "request_cap": CAP},
            )
            for model, extra in (("m-one", {}), ("m-two", {"reset_after_tokens": 9})):
                async with http.put(
                    f"{fake}/_control/models/{model}",
                    json={"token_interval_ms": 25, "completion_tokens": CAP, **extra},
                ) as r:
                    r.raise_for_status()
            await _wait_slices(http, urls)
            started = time.perf_counter()
            results = await asyncio.gather(
                *(
                    stream(http, urls[i % SIDECARS], i, 6 if i % 4 == 1 else None)
                    for i in range(REQUESTS)
                )
            )
            elapsed = time.perf_counter() - started
            await asyncio.sleep(1.0)  # reservations settle, spend reports land
            return await _tally(http, fake, urls, results, elapsed)


async def _wait_slices(http: aiohttp.ClientSession, urls: list[str]) -> None:
    for url in urls:
        for _ in range(300):
            body = await status(http, url)
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
        scopes = (await status(http, url))["budgets"]["scopes"]
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
