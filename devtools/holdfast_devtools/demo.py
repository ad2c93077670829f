"""``make demo``: rollouts under live conversations, none of which changes model on its own.

Starts a single-node etcd, the fake upstream, configsvc and two sidecars; creates releases with
``holdfastctl``; runs agents holding multi-turn conversations in the three APIs agents speak --
OpenAI chat completions and the Responses API (the real ``openai`` SDK) against agent
``support``, Anthropic Messages (the real ``anthropic`` SDK) against agent ``coder``, whose
releases are of the ``anthropic`` provider kind -- streaming and not, while an operator runs
progressive rollouts of both, switches ``support`` blue-green back, and migrates half of the new
release's conversations deliberately. Then a second rollout's provider breaks, and the health
gate rolls it back on its own and moves its conversations home. Prints which release served which
conversation. Everything it starts is stopped on the way out.
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
import anthropic
import openai

from holdfast_devtools import procs
from holdfast_devtools.demo_agent import (
    TURNS,
    Conversation,
    converse,
    converse_messages,
    converse_responses,
    report,
    say,
    worker,
)
from holdfast_devtools.etcd_local import EtcdNode

AGENT = "support"  # speaks OpenAI's APIs: chat completions and Responses
CODER = "coder"  # speaks Anthropic Messages, served by releases of the anthropic kind
ENV = "demo"
WORKERS = 12
RUN_SECONDS = 22.0
RELEASES = (("r1", "gpt-4o-mini"), ("r2", "gpt-4.1"), ("r3", "gpt-4.1-mini"))
CODER_RELEASES = (("c1", "claude-sonnet-4-5"), ("c2", "claude-opus-4-5"))
GATE = ("--max-error-rate-delta", "0.1", "--min-samples", "10", "--fails-to-abort", "2")
STORY: tuple[tuple[float, tuple[str, ...]], ...] = (
    (1.5, ("rollout", "start", AGENT, "r2", "--steps", "10,50,100", "--interval", "2s")),
    (2.5, ("rollout", "start", CODER, "c2", "--steps", "25,100", "--interval", "3s")),
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
            say("\nOperator creates the releases and points each agent at its first one:")
            base_url = f"{fake.url}/v1"
            creates = [(AGENT, name, model, "openai") for name, model in RELEASES] + [
                (CODER, name, model, "anthropic") for name, model in CODER_RELEASES
            ]
            for agent, name, model, kind in creates:
                cmd = (
                    "release", "create", agent, name, "--provider", kind, "--model", model,
                    "--base-url", base_url, "--api-key-env", PROVIDER_KEY_VAR,
                )  # fmt: skip
                ctl(svc.url, token, *cmd)
                say(f"  holdfastctl {' '.join(cmd)}")
            for agent, first in ((AGENT, "r1"), (CODER, "c1")):
                ctl(svc.url, token, "route", "set-stable", agent, first, "--reason", "demo start")
                say(f"  holdfastctl route set-stable {agent} {first}")
            sides = {}
            for agent in (AGENT, CODER):
                side = procs.sidecar(
                    base / "logs",
                    agent,
                    [etcd.client_url],
                    ENV,
                    base / f"state-{agent}",
                    "--health-interval",
                    "0.5",  # the health gate sees a breaking canary within a second or two
                    extra_env={PROVIDER_KEY_VAR: provider_key},
                    name=f"sidecar-{agent}",
                    sidecar_token=token,  # its health beats go to configsvc over HTTP
                ).start()
                running.append(side)
                sides[agent] = side
                say(f"sidecar     {side.url}  (agent {agent}; its base_url is {side.url}/v1)")
            await wait_ready(sides[AGENT].url, "r1")
            await wait_ready(sides[CODER].url, "c1")

            say(
                f"\nAgents: {WORKERS} workers hold {TURNS}-turn conversations for "
                f"{RUN_SECONDS:.0f}s (every other turn streamed): chat completions and Responses "
                f"chains with model '{AGENT}', Anthropic Messages with model '{CODER}'"
            )
            log: list[Conversation] = []
            marks: list[tuple[float, str]] = []
            key = "agent-key-never-forwarded"  # the provider key lives in the sidecar only
            oai = openai.AsyncOpenAI(base_url=f"{sides[AGENT].url}/v1", api_key=key, max_retries=0)
            claude = anthropic.AsyncAnthropic(base_url=sides[CODER].url, api_key=key, max_retries=0)
            dialects = (
                lambda s, t, lg: converse(oai, AGENT, s, t, lg),
                lambda s, t, lg: converse_responses(oai, AGENT, s, t, lg),
                lambda s, t, lg: converse_messages(claude, CODER, s, t, lg),
            )
            t0 = time.monotonic()
            stop_at = t0 + RUN_SECONDS
            await asyncio.gather(
                operator(svc.url, token, t0, marks),
                incident(fake.url, svc.url, token, t0, marks),
                *(worker(dialects[w % len(dialects)], w, t0, stop_at, log) for w in range(WORKERS)),
            )
            await oai.close()
            await claude.close()
            code = report(log, sorted(marks), bad=(INCIDENT[0], INCIDENT[2]))
            for agent in (AGENT, CODER):
                say(f"\nAudit trail of {agent} (holdfastctl history --agent {agent}):")
                history = ctl(svc.url, token, "history", "--agent", agent)
                say("  " + history.replace("\n", "\n  "))
            return code
        finally:
            for proc in reversed(running):
                proc.stop()
            say("\nStopped the sidecars, configsvc, fake LLM and etcd.")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="holdfast-demo-") as tmp:
        try:
            return asyncio.run(story(Path(tmp)))
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
