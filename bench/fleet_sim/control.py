"""The real control plane of a simulated fleet: a 3-member etcd cluster, configsvc replicas with a
tokens file (an admin token for the operator, a token of role sidecar for the fleet), and the
operator's calls to configsvc's HTTP API."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from bench.fleet_sim.model import ENV, RELEASES
from holdfast_devtools import procs
from holdfast_devtools.etcd_cluster import EtcdCluster

FLAG: Final = "sim-kill-switch"
FLAG_FILE: Final = {
    "flags": {
        FLAG: {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "on",
        }
    }
}


def _line(subject: str, role: str, token: str) -> str:
    digest = hashlib.sha256(token.encode()).hexdigest()
    return json.dumps({"subject": subject, "role": role, "sha256": digest})


@dataclass
class ControlPlane:
    base: Path
    cluster: EtcdCluster
    replicas: list[procs.ManagedProcess]
    admin_token: str
    sidecar_token: str

    @property
    def endpoints(self) -> list[str]:
        return self.cluster.endpoints

    @property
    def url(self) -> str:
        return self.replicas[0].url


@contextmanager
def control_plane(
    base: Path, replicas: int, *, rollout_tick: float = 0.5
) -> Iterator[ControlPlane]:
    admin, sidecar = secrets.token_hex(16), secrets.token_hex(16)
    tokens = base / "tokens.jsonl"
    base.mkdir(parents=True, exist_ok=True)
    tokens.write_text(_line("operator", "admin", admin) + "\n" + _line("fleet", "sidecar", sidecar))
    with EtcdCluster(3, base_dir=base / "etcd") as cluster:
        started: list[procs.ManagedProcess] = []
        try:
            for i in range(replicas):
                proc = procs.configsvc(
                    base / f"configsvc-{i}", cluster.endpoints, ENV, "",
                    "--tokens-file", str(tokens), "--rollout-tick", str(rollout_tick),
                )  # fmt: skip
                started.append(proc.spawn())
            for proc in started:
                proc.ready(60)
            yield ControlPlane(base, cluster, started, admin, sidecar)
        finally:
            for proc in started:
                proc.stop()


class Operator:
    """configsvc's HTTP API as an operator calls it (the admin token)."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http, self.url = http, url
        self.headers = {"Authorization": f"Bearer {token}", "X-Holdfast-Actor": "fleet-sim"}

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        for attempt in range(5):
            async with self.http.request(
                method, self.url + path, json=body, headers=self.headers
            ) as resp:
                data = await resp.json(content_type=None)
                if resp.status < 400:
                    return data
                if resp.status != 409 or attempt == 4:  # a concurrent change: try again
                    raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    async def configure(
        self, agents: Sequence[str], fake_url: str, *, concurrency: int = 16
    ) -> None:
        """Releases r1 and r2 for every agent, r1 stable, and the fleet's flag."""
        gate = asyncio.Semaphore(concurrency)

        async def one(agent: str) -> None:
            async with gate:
                for release in RELEASES:
                    body = {"release": release, "model": f"m-{release}", "base_url": fake_url}
                    await self.call("POST", f"/v1/agents/{agent}/releases", body)
                await self.call("PUT", f"/v1/agents/{agent}/route/stable", {"release": RELEASES[0]})

        await asyncio.gather(*(one(a) for a in agents))
        await self.call(
            "POST", "/v1/flags/apply", {"content": json.dumps(FLAG_FILE), "source": "sim.json"}
        )

    async def kill_flag(self) -> tuple[int, float]:
        sent = time.time()
        body = await self.call("POST", f"/v1/flags/{FLAG}/kill", {"reason": "fleet sim"})
        return int(body["flag"]["mod_revision"]), sent

    async def canary(self, agent: str, percent: float) -> tuple[int, float]:
        sent = time.time()
        body = {"release": RELEASES[1], "percent": percent, "reason": "fleet sim"}
        answer = await self.call("PUT", f"/v1/agents/{agent}/canary", body)
        return int(answer["mod_revision"]), sent

    async def rollout(self, agent: str, policy: dict[str, Any]) -> Any:
        body = {"release": RELEASES[1], "steps": [50, 100], "interval": "1h", "policy": policy}
        return await self.call("POST", f"/v1/agents/{agent}/rollout", body)

    async def rollout_status(self, agent: str) -> Any:
        return await self.call("GET", f"/v1/agents/{agent}/rollout")

    async def status(self, agent: str) -> Any:
        return await self.call("GET", f"/v1/status?agent={agent}")
