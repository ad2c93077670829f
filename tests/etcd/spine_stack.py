"""Real processes for end-to-end tests: fake LLM, configsvc and sidecars around a real etcd."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from configsvc.cli.client import Client
from configsvc.cli.settings import ClientSettings
from holdfast_devtools import procs

AGENT = "support"
KEY_VAR = "E2E_PROVIDER_KEY"


@dataclass
class Stack:
    base: Path
    env: str
    fake: procs.ManagedProcess
    svc: procs.ManagedProcess
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    provider_key: str = field(default_factory=lambda: "sk-" + secrets.token_hex(8))
    sidecars: list[procs.ManagedProcess] = field(default_factory=list)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [procs.script("holdfastctl"), "--server", self.svc.url, *args],
            env={**os.environ, "HOLDFAST_TOKEN": self.token, "HOLDFAST_ACTOR": "e2e"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"holdfastctl {args} -> {result.returncode}: {result.stderr}")
        return result

    def api(self) -> Client:
        """configsvc's HTTP API in process: set-up that is not itself under test skips the
        CLI's process start (tests of the CLI call ``ctl``)."""
        return Client(ClientSettings(server=self.svc.url, token=self.token, actor="e2e"))

    def create_releases(self, *names_models: tuple[str, str]) -> None:
        api = self.api()
        for name, model in names_models:
            api.create_release(
                AGENT,
                {
                    "release": name,
                    "model": model,
                    "base_url": f"{self.fake.url}/v1",
                    "api_key_env": KEY_VAR,
                },
            )

    def set_stable(self, release: str) -> None:
        self.api().set_stable(AGENT, release, "", None)

    def start_sidecar(
        self,
        etcd: Sequence[str],
        *,
        name: str = "sidecar",
        state_dir: Path | None = None,
        port: int = 0,
        args: Sequence[str] = (),
        wait: bool = True,
    ) -> procs.ManagedProcess:
        proc = procs.sidecar(
            self.base / "logs",
            AGENT,
            etcd,
            self.env,
            state_dir or self.base / f"state-{name}",
            "--stale-after",
            "1",
            *args,
            name=name,
            port=port,
            extra_env={KEY_VAR: self.provider_key},
            sidecar_token=self.token,
        ).spawn()
        self.sidecars.append(proc)
        return proc.ready() if wait else proc

    def start_sidecars(
        self, etcd: Sequence[str], names: Sequence[str], *, args: Sequence[str] = ()
    ) -> list[procs.ManagedProcess]:
        """Several sidecars booting at once (each is ready when this returns)."""
        started = [self.start_sidecar(etcd, name=n, args=args, wait=False) for n in names]
        return [p.ready() for p in started]

    def stop(self) -> None:
        for proc in [*self.sidecars, self.svc, self.fake]:
            proc.stop()


def start_stack(base: Path, env: str, etcd: Sequence[str], svc_args: Sequence[str] = ()) -> Stack:
    fake = procs.fakellm(base / "logs").spawn()
    token = secrets.token_hex(8)
    provider_key = "sk-" + secrets.token_hex(8)
    svc = procs.configsvc(base / "logs", etcd, env, token, *svc_args)
    svc.env[KEY_VAR] = provider_key  # configsvc calls the provider too: a switch's probe
    svc.spawn()
    fake.ready()
    svc.ready()
    return Stack(base=base, env=env, fake=fake, svc=svc, token=token, provider_key=provider_key)


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return resp.status, await resp.json()


async def wait_for(predicate_url: str, check: Any, timeout: float = 15.0) -> Any:
    """Poll a JSON endpoint until ``check(body)`` is truthy; return that body."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            _, last = await get_json(predicate_url)
            if check(last):
                return last
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting on {predicate_url}; last answer: {last}")


def stable_is(release: str) -> Any:
    return lambda body: (body.get("route") or {}).get("stable") == release
