"""Each dialect's cost on the relay: added latency and CPU per relayed SSE event, side by side.

``python -m bench.dialects`` prints the section and writes it into bench/RESULTS.md.

One fake upstream process (``holdfast-fakellm``, 200-token streams, no delay between tokens);
the sidecar's HTTP app served in this process, as ``Sidecar.build_app`` assembles it (every
filter, a config fed by hand), and one client that reads each stream to its end. Rounds
alternate the direct path (client -> fake) and the sidecar path (client -> sidecar -> fake) for
every dialect, so that a drift of the shared machine's speed hits them alike. Per stream:
time to the last byte; per path: this process's CPU time. The sidecar's added CPU per event is
(CPU of the sidecar path - CPU of the direct path) / events relayed, since the client's own work
is the same on both paths.

A dialect is measured when it is listed in ``CASES`` (and the fake speaks it): one line there,
its endpoint and a streamed request body.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import uvloop
from aiohttp import web

from bench.sections import markers, publish
from holdfast.keyspace import Keyspace, Release, Route
from holdfast.store import KeyValue
from holdfast_devtools import procs
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState
from sidecar.http.app import Parts, build_http_app
from sidecar.ops.metrics import SidecarMetrics
from sidecar.pins.pinning import Pinning
from sidecar.pins.table import PinTable
from sidecar.settings.model import SidecarSettings
from sidecar.upstream.client import Upstream

START, END = markers("dialects")
AGENT: Final = "bench"
MODEL: Final = "bench-dialects"
TOKENS: Final = 200
KS: Final = Keyspace("dev")


@dataclass(frozen=True, slots=True)
class Case:
    path: str
    body: Callable[[str], dict[str, Any]]  # the streamed request, for a model name
    provider: str = "openai"  # the provider kind of the release that serves it
    headers: tuple[tuple[str, str], ...] = ()  # what the API wants besides the body


CASES: Final[dict[str, Case]] = {
    "openai.chat": Case(
        "/v1/chat/completions",
        lambda m: {"model": m, "messages": [{"role": "user", "content": "go"}], "stream": True},
    ),
    "openai.responses": Case(
        "/v1/responses", lambda m: {"model": m, "input": "go", "stream": True}
    ),
    "anthropic.messages": Case(
        "/v1/messages",
        lambda m: {
            "model": m,
            "max_tokens": TOKENS,
            "stream": True,
            "messages": [{"role": "user", "content": "go"}],
        },
        provider="anthropic",
        headers=(("anthropic-version", "2023-06-01"),),
    ),
}


@dataclass
class Tally:
    seconds: list[float]
    cpu: float = 0.0
    events: int = 0


class _Control:
    connected = True
    last_contact = 0.0
    revision = 1
    resyncs = 0
    reconnects = 0


async def serve_sidecar(fake_url: str, provider: str) -> tuple[web.AppRunner, str]:
    """One sidecar app per provider kind: an agent's releases are of one kind."""
    settings = SidecarSettings(agent=AGENT)
    config = ConfigState(KS, AGENT, kinds=CONFIG_KINDS)
    release = Release(
        agent=AGENT, name="r1", model=MODEL, base_url=f"{fake_url}/v1", provider=provider
    )
    records = {
        KS.release(AGENT, "r1"): release.encode(),
        KS.route(AGENT): Route(agent=AGENT, stable="r1").encode(),
    }
    config.apply_reset(1, {k: KeyValue(k, v, 1, 1, 1) for k, v in records.items()}, "etcd")
    metrics = SidecarMetrics(AGENT)
    pinning = Pinning(AGENT, PinTable(KS, AGENT), metrics.pins, ttl=settings.pin_ttl)
    upstream = Upstream(settings, {})
    await upstream.start()
    app = build_http_app(
        Parts(
            settings=settings,
            config=config,
            upstream=upstream,
            metrics=metrics,
            control=_Control(),
            etcd_endpoint=lambda: "-",
            pinning=pinning,
        )
    )

    async def close(_app: web.Application) -> None:
        await upstream.close()

    app.on_cleanup.append(close)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def one_stream(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> int:
    events = 0
    async with http.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        async for chunk in resp.content.iter_any():
            events += chunk.count(b"\n\n")
    return events


async def round_of(
    http: aiohttp.ClientSession,
    url: str,
    case: Case,
    model: str,
    streams: int,
    tally: Tally,
) -> None:
    body, headers = case.body(model), dict(case.headers)
    cpu = time.process_time()
    for _ in range(streams):
        t0 = time.perf_counter()
        tally.events += await one_stream(http, url, body, headers)
        tally.seconds.append(time.perf_counter() - t0)
    tally.cpu += time.process_time() - cpu


async def measure(streams: int, rounds: int) -> dict[str, tuple[Tally, Tally]]:
    with tempfile.TemporaryDirectory() as tmp:
        fake = procs.fakellm(Path(tmp)).start()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.put(
                    f"{fake.url}/_control/models/{MODEL}", json={"completion_tokens": TOKENS}
                ) as resp:
                    assert resp.status == 200
                served = {c.provider: await serve_sidecar(fake.url, c.provider)
                          for c in CASES.values()}  # fmt: skip
                sidecar = {kind: url for kind, (_, url) in served.items()}
                try:
                    out = {name: (Tally([]), Tally([])) for name in CASES}
                    for case in CASES.values():  # warm-up: connections, caches
                        via = sidecar[case.provider] + case.path
                        await round_of(http, fake.url + case.path, case, MODEL, 5, Tally([]))
                        await round_of(http, via, case, AGENT, 5, Tally([]))
                    for _ in range(rounds):
                        for name, case in CASES.items():
                            direct, proxied = out[name]
                            via = sidecar[case.provider] + case.path
                            await round_of(http, fake.url + case.path, case, MODEL, streams, direct)
                            await round_of(http, via, case, AGENT, streams, proxied)
                    return out
                finally:
                    for runner, _ in served.values():
                        await runner.cleanup()
        finally:
            fake.stop()


def render(results: dict[str, tuple[Tally, Tally]], streams: int, rounds: int) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        START,
        "## Dialects: what each costs on the relay",
        "",
        f"`python -m bench.dialects`, {when}, on a shared 2-core machine (other work was "
        f"running: compare the rows with each other, not with other runs). {rounds} rounds "
        f"alternating the paths and the dialects, {streams} sequential {TOKENS}-token streams "
        "per path, dialect and round; the fake upstream is a separate process, the sidecar's "
        "HTTP app (every filter, no budgets configured) and the client share this one. "
        "*Added* is sidecar minus direct: p50 of the time to a stream's last byte, and this "
        "process's CPU per relayed SSE event (the client's work is the same on both paths).",
        "",
        "| dialect | events per stream | direct p50 ms | sidecar p50 ms | added p50 ms "
        "| added CPU µs per event |",
        "|---|---|---|---|---|---|",
    ]
    for name, (direct, proxied) in results.items():
        per_stream = proxied.events / max(1, len(proxied.seconds))
        d50 = statistics.median(direct.seconds) * 1000
        s50 = statistics.median(proxied.seconds) * 1000
        added_cpu = (proxied.cpu - direct.cpu) / max(1, proxied.events) * 1e6
        lines.append(
            f"| {name} | {per_stream:.0f} | {d50:.2f} | {s50:.2f} | {s50 - d50:+.2f} "
            f"| {added_cpu:.1f} |"
        )
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dialects", description=__doc__)
    parser.add_argument("--streams", type=int, default=40, help="per path, dialect and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    results = uvloop.run(measure(args.streams, args.rounds))
    return publish("dialects", render(results, args.streams, args.rounds))


if __name__ == "__main__":
    sys.exit(main())
