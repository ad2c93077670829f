"""``make demo``: a live model-pointer change under an agent's traffic, with zero failed requests.

Starts a single-node etcd, the fake upstream, configsvc and one sidecar; creates two releases
with ``holdfastctl``; drives a small agent (the real ``openai`` SDK, streaming and not) through
the sidecar; switches the stable release mid-run and rolls it back; prints which release served
which request. Everything it starts is stopped on the way out, even on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openai
from openai.types.chat import ChatCompletionMessageParam

from holdfast.devtools import procs
from holdfast.devtools.etcd_local import EtcdNode

AGENT = "support"
ENV = "demo"
WORKERS = 4
RUN_SECONDS = 9.0
SWITCH_AT = 3.0
ROLLBACK_AT = 6.0
PROVIDER_KEY_VAR = "DEMO_PROVIDER_KEY"


@dataclass
class Served:
    at: float
    release: str
    stream: bool
    ok: bool
    error: str = ""


def say(text: str) -> None:
    print(text, flush=True)


def ctl(server: str, token: str, *args: str) -> str:
    """Run holdfastctl as an operator would; fail the demo loudly if it refuses."""
    result = subprocess.run(
        [procs.script("holdfastctl"), "--server", server, *args],
        env={**os.environ, "HOLDFAST_TOKEN": token, "HOLDFAST_ACTOR": "demo-operator"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"holdfastctl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


async def wait_ready(sidecar_url: str, want_release: str) -> None:
    deadline = time.monotonic() + 20.0
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{sidecar_url}/status") as resp:
                    body = await resp.json()
                    if (body.get("route") or {}).get("stable") == want_release:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("sidecar did not pick up the route in time")


async def agent_worker(
    client: openai.AsyncOpenAI, worker: int, t0: float, stop_at: float, log: list[Served]
) -> None:
    turn = 0
    while time.monotonic() < stop_at:
        turn += 1
        stream = turn % 2 == 0
        messages: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": f"worker {worker} turn {turn}: status update?"}
        ]
        at = time.monotonic() - t0
        completions = client.chat.completions.with_raw_response
        try:
            if stream:
                streamed = await completions.create(model=AGENT, messages=messages, stream=True)
                release = streamed.headers.get("x-holdfast-release", "?")
                async for _chunk in streamed.parse():
                    pass
            else:
                plain = await completions.create(model=AGENT, messages=messages)
                release = plain.headers.get("x-holdfast-release", "?")
                plain.parse()
            log.append(Served(at, release, stream, ok=True))
        except openai.OpenAIError as exc:
            log.append(Served(at, "-", stream, ok=False, error=f"{type(exc).__name__}: {exc}"))
        await asyncio.sleep(0.02)


async def operator(server: str, token: str, t0: float, marks: list[tuple[float, str]]) -> None:
    await asyncio.sleep(SWITCH_AT)
    out = await asyncio.to_thread(
        ctl, server, token, "route", "set-stable", AGENT, "r2", "--reason", "demo: try gpt-4.1"
    )
    marks.append((time.monotonic() - t0, "holdfastctl route set-stable support r2"))
    say(f"  [{marks[-1][0]:5.2f}s] operator: {marks[-1][1]}\n           {out.splitlines()[0]}")
    await asyncio.sleep(ROLLBACK_AT - SWITCH_AT)
    out = await asyncio.to_thread(
        ctl, server, token, "route", "rollback", AGENT, "--reason", "demo: roll back"
    )
    marks.append((time.monotonic() - t0, "holdfastctl route rollback support"))
    say(f"  [{marks[-1][0]:5.2f}s] operator: {marks[-1][1]}\n           {out.splitlines()[0]}")


def report(log: list[Served], marks: list[tuple[float, str]]) -> int:
    say("\nWhich release served the agent, second by second (requests per release):")
    by_second: dict[int, Counter[str]] = {}
    for s in log:
        by_second.setdefault(int(s.at), Counter())[s.release] += 1
    for second in sorted(by_second):
        counts = ", ".join(f"{rel}={n}" for rel, n in sorted(by_second[second].items()))
        say(f"  t={second:2d}s  {counts}")
    failures = [s for s in log if not s.ok]
    for mark_at, what in marks:
        first_after = next((s for s in sorted(log, key=lambda s: s.at) if s.at > mark_at), None)
        if first_after:
            say(
                f"  after '{what}' at {mark_at:.2f}s the next request went to {first_after.release}"
            )
    totals = Counter(s.release for s in log if s.ok)
    streamed = sum(1 for s in log if s.stream)
    say(f"\nRequests: {len(log)} ({streamed} streamed), by release: {dict(sorted(totals.items()))}")
    say(f"Failed requests: {len(failures)}")
    for f in failures[:5]:
        say(f"  {f.at:5.2f}s {f.error}")
    return 0 if not failures and len(totals) >= 2 else 1


async def story(base: Path) -> int:
    token = secrets.token_urlsafe(16)
    provider_key = secrets.token_urlsafe(16)
    with EtcdNode(base_dir=base / "etcd") as etcd:
        say(f"etcd        {etcd.client_url}")
        running: list[procs.ManagedProcess] = []
        try:
            fake = procs.fakellm(base / "logs", "--require-key", provider_key).start()
            running.append(fake)
            say(f"fake LLM    {fake.url}  (needs the provider key, which only the sidecar has)")
            svc = procs.configsvc(base / "logs", [etcd.client_url], ENV, token).start()
            running.append(svc)
            say(f"configsvc   {svc.url}")
            say("\nOperator creates two releases and points the agent at r1:")
            base_url = f"{fake.url}/v1"
            for name, model in (("r1", "gpt-4o-mini"), ("r2", "gpt-4.1")):
                cmd = (
                    "release",
                    "create",
                    AGENT,
                    name,
                    "--model",
                    model,
                    "--base-url",
                    base_url,
                    "--api-key-env",
                    PROVIDER_KEY_VAR,
                )
                ctl(svc.url, token, *cmd)
                say(f"  holdfastctl {' '.join(cmd)}")
            ctl(svc.url, token, "route", "set-stable", AGENT, "r1", "--reason", "demo start")
            say(f"  holdfastctl route set-stable {AGENT} r1")
            side = procs.sidecar(
                base / "logs",
                AGENT,
                [etcd.client_url],
                ENV,
                base / "state",
                extra_env={PROVIDER_KEY_VAR: provider_key},
            ).start()
            running.append(side)
            say(f"sidecar     {side.url}  (the agent's base_url is {side.url}/v1)")
            await wait_ready(side.url, "r1")

            say(
                f"\nAgent: {WORKERS} workers talk to model '{AGENT}' for {RUN_SECONDS:.0f}s "
                "(every other request streamed)"
            )
            log: list[Served] = []
            marks: list[tuple[float, str]] = []
            client = openai.AsyncOpenAI(
                base_url=f"{side.url}/v1", api_key="agent-key-never-forwarded", max_retries=0
            )
            t0 = time.monotonic()
            stop_at = t0 + RUN_SECONDS
            await asyncio.gather(
                operator(svc.url, token, t0, marks),
                *(agent_worker(client, w, t0, stop_at, log) for w in range(WORKERS)),
            )
            await client.close()
            code = report(log, marks)
            say("\nAudit trail (holdfastctl history):")
            say("  " + ctl(svc.url, token, "history", "--agent", AGENT).replace("\n", "\n  "))
            return code
        finally:
            for proc in reversed(running):
                proc.stop()
            say("\nStopped sidecar, configsvc, fake LLM and etcd.")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="holdfast-demo-") as tmp:
        try:
            return asyncio.run(story(Path(tmp)))
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
