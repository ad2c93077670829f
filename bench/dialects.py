"""Each dialect's cost on the relay, and each translation's next to passthrough: added latency,
added time to the first byte, and CPU per relayed SSE event, side by side.

``python -m bench.dialects`` prints the section and writes it into bench/RESULTS.md.

One fake upstream process (``holdfast-fakellm``, 200-token streams, no delay between tokens);
one sidecar HTTP app per provider kind served in this process, as ``Sidecar.build_app``
assembles it (every filter, a config fed by hand, its stable release of that kind), and one
client that reads each stream to its end. Rounds alternate the direct path (client -> fake, in
the provider's API) and the sidecar path (client -> sidecar -> fake, in the agent's API) for
every case, so that a drift of the shared machine's speed hits them alike. Per stream: time to
the first byte and to the last; per path: this process's CPU time. The sidecar's added CPU per
event is (CPU of the sidecar path - CPU of the direct path) / the provider's events, since the
client's own work is alike on both paths (it counts events, it does not parse them): for a
translated case that is the cost of translating one provider event, its decoding for the
filters included.

A case is one line of ``CASES``: the agent's endpoint and streamed body, the provider kind of the
release that serves it, and the provider's own endpoint and body (the direct path).
"""

from __future__ import annotations

import argparse
import os
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
ANTHROPIC: Final = {"anthropic-version": "2023-06-01"}

Body = Callable[[str], dict[str, Any]]


def chat(m: str) -> dict[str, Any]:
    return {"model": m, "messages": [{"role": "user", "content": "go"}], "stream": True}


def responses(m: str) -> dict[str, Any]:
    return {"model": m, "input": "go", "stream": True, "store": False}


def messages(m: str) -> dict[str, Any]:
    return {"model": m, "max_tokens": 1024, "stream": True,
            "messages": [{"role": "user", "content": "go"}]}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Case:
    path: str  # the agent's endpoint on the sidecar
    body: Body  # the agent's streamed request, for a model name
    provider: str  # the provider kind of the release that serves it
    direct_path: str  # the provider's endpoint on the fake (the direct path)
    direct_body: Body

    @property
    def translated(self) -> bool:
        return self.path != self.direct_path


CASES: Final[dict[str, Case]] = {
    "openai.chat": Case("/v1/chat/completions", chat, "openai", "/v1/chat/completions", chat),
    "openai.responses": Case("/v1/responses", responses, "openai", "/v1/responses", responses),
    "anthropic.messages": Case("/v1/messages", messages, "anthropic", "/v1/messages", messages),
    "openai.chat->anthropic.messages": Case(
        "/v1/chat/completions", chat, "anthropic", "/v1/messages", messages
    ),
    "anthropic.messages->openai.chat": Case(
        "/v1/messages", messages, "openai", "/v1/chat/completions", chat
    ),
    "openai.responses->anthropic.messages": Case(
        "/v1/responses", responses, "anthropic", "/v1/messages", messages
    ),
    "openai.responses->openai.chat": Case(
        "/v1/responses", responses, "openai-chat", "/v1/chat/completions", chat
    ),
}


@dataclass
class Tally:
    seconds: list[float]
    first: list[float]  # to the first byte of the body
    cpu: float = 0.0
    events: int = 0


class _Control:
    connected = True
    last_contact = 0.0
    revision = 1
    resyncs = 0
    reconnects = 0


async def serve_sidecar(fake_url: str, provider: str) -> tuple[web.AppRunner, str]:
    """A sidecar app whose stable release is of provider kind ``provider``."""
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
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], tally: Tally
) -> None:
    t0 = time.perf_counter()
    first: float | None = None
    async with http.post(url, json=body, headers=ANTHROPIC) as resp:
        assert resp.status == 200, await resp.text()
        async for chunk in resp.content.iter_any():
            if first is None:
                first = time.perf_counter() - t0
            tally.events += chunk.count(b"\n\n")
    tally.seconds.append(time.perf_counter() - t0)
    tally.first.append(first if first is not None else tally.seconds[-1])


async def round_of(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], streams: int, tally: Tally
) -> None:
    cpu = time.process_time()
    for _ in range(streams):
        await one_stream(http, url, body, tally)
    tally.cpu += time.process_time() - cpu


async def measure(streams: int, rounds: int) -> dict[str, tuple[Tally, Tally]]:
    with tempfile.TemporaryDirectory() as tmp:
        fake = procs.fakellm(Path(tmp)).start()
        runners: list[web.AppRunner] = []
        try:
            async with aiohttp.ClientSession() as http:
                async with http.put(
                    f"{fake.url}/_control/models/{MODEL}", json={"completion_tokens": TOKENS}
                ) as resp:
                    assert resp.status == 200
                sidecars: dict[str, str] = {}
                for kind in sorted({case.provider for case in CASES.values()}):
                    runner, sidecars[kind] = await serve_sidecar(fake.url, kind)
                    runners.append(runner)
                out = {name: (Tally([], []), Tally([], [])) for name in CASES}

                async def both(case: Case, n: int, direct: Tally, proxied: Tally) -> None:
                    await round_of(
                        http, fake.url + case.direct_path, case.direct_body(MODEL), n, direct
                    )
                    await round_of(
                        http, sidecars[case.provider] + case.path, case.body(AGENT), n, proxied
                    )

                for case in CASES.values():  # warm-up: connections, caches
                    await both(case, 5, Tally([], []), Tally([], []))
                for _ in range(rounds):
                    for name, case in CASES.items():
                        await both(case, streams, *out[name])
                return out
        finally:
            for runner in runners:
                await runner.cleanup()
            fake.stop()


def render(results: dict[str, tuple[Tally, Tally]], streams: int, rounds: int) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        START,
        "## Dialects and translations: what each costs on the relay",
        "",
        f"`python -m bench.dialects`, {when}, on {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end (compare the rows with each other, not with "
        f"other runs). {rounds} rounds "
        f"alternating the paths and the cases, {streams} sequential {TOKENS}-token streams "
        "per path, case and round; the fake upstream is a separate process, the sidecars' "
        "HTTP apps (every filter, no budgets configured; one per provider kind) and the client "
        "share this one. A case is the agent's API -> the API of the release's provider: the "
        "first three are passthrough, the others translated (the direct path is the "
        "provider's own API). *Added* is sidecar minus direct: p50 of the time to a stream's "
        "first byte and last byte, and this process's CPU per provider event (the client's work "
        "is alike on both paths: it counts events). A translation's own cost is its row "
        "minus the passthrough row of the provider's API (same provider events, same "
        "direct path).",
        "",
        "| case | provider events per stream | agent events per stream | direct p50 ms "
        "| sidecar p50 ms | added p50 ms | added first byte p50 ms | added CPU µs per event |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, (direct, proxied) in results.items():
        provider_events = direct.events / max(1, len(direct.seconds))
        agent_events = proxied.events / max(1, len(proxied.seconds))
        d50 = statistics.median(direct.seconds) * 1000
        s50 = statistics.median(proxied.seconds) * 1000
        first = (statistics.median(proxied.first) - statistics.median(direct.first)) * 1000
        added_cpu = (proxied.cpu - direct.cpu) / max(1, direct.events) * 1e6
        lines.append(
            f"| {name} | {provider_events:.0f} | {agent_events:.0f} | {d50:.2f} | {s50:.2f} "
            f"| {s50 - d50:+.2f} | {first:+.2f} | {added_cpu:.1f} |"
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
