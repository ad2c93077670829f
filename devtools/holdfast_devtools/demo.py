"""``make demo``: rollouts under live conversations, none of which changes model on its own.

Starts a single-node etcd, the fake upstream, configsvc and one sidecar; creates three releases
with ``holdfastctl``; runs an agent holding multi-turn conversations (the real ``openai`` SDK,
streaming and not) through the sidecar while an operator runs a progressive rollout, switches
blue-green back, and migrates half of the new release's conversations deliberately. Then a
second rollout's provider breaks, and the health gate rolls it back on its own and moves its
conversations home. Prints which release served which conversation. Everything it starts is
stopped on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import openai

from holdfast_devtools import procs
from holdfast_devtools.demo_agent import TURNS, Conversation, report, say, worker
from holdfast_devtools.etcd_local import EtcdNode

AGENT = "support"
ENV = "demo"
WORKERS = 12
RUN_SECONDS = 22.0
RELEASES = (("r1", "gpt-4o-mini"), ("r2", "gpt-4.1"), ("r3", "gpt-4.1-mini"))
GATE = ("--max-error-rate-delta", "0.1", "--min-samples", "10", "--fails-to-abort", "2")
STORY: tuple[tuple[float, tuple[str, ...]], ...] = (
    (1.5, ("rollout", "start", AGENT, "r2", "--steps", "10,50,100", "--interval", "2s")),
    (9.0, ("switch", AGENT, "--back", "--reason", "demo: blue-green back to r1")),
    (10.0, ("pins", "migrate", AGENT, "--from", "r2", "--to", "r1", "--percent", "50")),
    (11.5, ("rollout", "start", AGENT, "r3", "--steps", "50,100", "--interval", "1m", *GATE,
            "--migrate-on-abort")),
)  # fmt: skip
# r3's provider starts failing here; nobody runs a command: the health gate acts alone
INCIDENT = ("r3", "gpt-4.1-mini", 15.0)
PROVIDER_KEY_VAR = "DEMO_PROVIDER_KEY"


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


async def operator(server: str, token: str, t0: float, marks: list[tuple[float, str]]) -> None:
    """The rollout story, on a clock: progressive rollout, blue-green back, one migration."""
    for at, args in STORY:
        await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
        out = await asyncio.to_thread(ctl, server, token, *args)
        marks.append((time.monotonic() - t0, "holdfastctl " + " ".join(args)))
        say(f"  [{marks[-1][0]:5.2f}s] operator: {marks[-1][1]}\n           {out.splitlines()[0]}")


async def incident(
    fake_url: str, server: str, token: str, t0: float, marks: list[tuple[float, str]]
) -> None:
    """Break the canary's provider on the clock, then watch the health gate act alone."""
    release, model, at = INCIDENT
    await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
    async with aiohttp.ClientSession() as http:
        url = f"{fake_url}/_control/models/{model}"
        async with http.put(url, json={"error_rate": 1.0}) as resp:
            resp.raise_for_status()
    broke = time.monotonic() - t0
    marks.append((broke, f"incident: {release}'s provider ({model}) fails"))
    say(f"  [{broke:5.2f}s] {marks[-1][1]} every request; nobody runs a command")
    while time.monotonic() - t0 < RUN_SECONDS:
        out = await asyncio.to_thread(ctl, server, token, "--json", "rollout", "status", AGENT)
        rollout = json.loads(out)["rollout"]
        if rollout.get("state") == "aborted":
            seen = time.monotonic() - t0
            marks.append(
                (seen, f"health gate aborted {release} on its own, {seen - broke:.1f}s later")
            )
            say(f"  [{seen:5.2f}s] {marks[-1][1]}: {rollout.get('reason', '')[:110]}")
            return
        await asyncio.sleep(0.2)


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
            svc = procs.configsvc(
                base / "logs", [etcd.client_url], ENV, token, "--rollout-tick", "0.2"
            ).start()
            running.append(svc)
            say(f"configsvc   {svc.url}")
            say("\nOperator creates three releases and points the agent at r1:")
            base_url = f"{fake.url}/v1"
            for name, model in RELEASES:
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
                "--health-interval",
                "0.5",  # the health gate sees a breaking canary within a second or two
                extra_env={PROVIDER_KEY_VAR: provider_key},
                sidecar_token=token,  # its health beats go to configsvc over HTTP
            ).start()
            running.append(side)
            say(f"sidecar     {side.url}  (the agent's base_url is {side.url}/v1)")
            await wait_ready(side.url, "r1")

            say(
                f"\nAgent: {WORKERS} workers hold {TURNS}-turn conversations with model "
                f"'{AGENT}' for {RUN_SECONDS:.0f}s (every other turn streamed)"
            )
            log: list[Conversation] = []
            marks: list[tuple[float, str]] = []
            client = openai.AsyncOpenAI(
                base_url=f"{side.url}/v1", api_key="agent-key-never-forwarded", max_retries=0
            )
            t0 = time.monotonic()
            stop_at = t0 + RUN_SECONDS
            await asyncio.gather(
                operator(svc.url, token, t0, marks),
                incident(fake.url, svc.url, token, t0, marks),
                *(worker(client, AGENT, w, t0, stop_at, log) for w in range(WORKERS)),
            )
            await client.close()
            code = report(log, sorted(marks), bad=(INCIDENT[0], INCIDENT[2]))
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
