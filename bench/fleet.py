"""A real fleet for the end-to-end benches, and configsvc's HTTP API as they drive it.

``fleet`` starts one etcd, the fake upstream (unless told not to), configsvc and any number of
sidecars of AGENT the real way (``holdfast.devtools.procs``), and stops them on the way out;
``Api`` calls configsvc's HTTP API with the fleet's token; ``status`` reads a sidecar's
``GET /status``.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode

AGENT: Final = "bench"
ENV: Final = "dev"


class Api:
    """configsvc's HTTP API as the ``bench`` actor; an error status raises."""

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

    async def create_release(self, name: str, model: str, base_url: str) -> Any:
        body = {"release": name, "model": model, "base_url": base_url}
        return await self.call("POST", f"/v1/agents/{AGENT}/releases", body)

    async def set_stable(self, release: str) -> Any:
        return await self.call("PUT", f"/v1/agents/{AGENT}/route/stable", {"release": release})


async def status(http: aiohttp.ClientSession, sidecar: str) -> Any:
    """A sidecar's ``GET /status``, decoded."""
    async with http.get(f"{sidecar}/status") as resp:
        return await resp.json()


@dataclass
class Fleet:
    """The running processes; ``sidecars`` in start order (a bench may stop and drop some)."""

    base: Path
    etcd: str
    token: str
    svc: procs.ManagedProcess
    fake: procs.ManagedProcess | None
    sidecars: list[procs.ManagedProcess] = field(default_factory=list)

    @property
    def fake_url(self) -> str:
        if self.fake is None:
            raise RuntimeError("this fleet runs without the fake upstream")
        return self.fake.url

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.sidecars]

    def api(self, http: aiohttp.ClientSession) -> Api:
        return Api(http, self.svc.url, self.token)

    def add_sidecar(
        self, name: str, *args: str, cpu: int | None = None, timeout: float = 20.0
    ) -> procs.ManagedProcess:
        """Start one more sidecar of AGENT (state in ``base/name``, log ``logs/name.log``)."""
        proc = procs.sidecar(
            self.base / "logs",
            AGENT,
            [self.etcd],
            ENV,
            self.base / name,
            *args,
            name=name,
            cpu=cpu,
            sidecar_token=self.token,
        ).start(timeout)
        self.sidecars.append(proc)
        return proc


@contextmanager
def fleet(name: str, sidecars: int = 0, *sidecar_args: str, fake: bool = True) -> Iterator[Fleet]:
    """etcd ``name``, the fake upstream, configsvc and sidecars ``s0``.. ``s<sidecars-1>``
    (each given ``sidecar_args``), in a new temporary directory prefixed ``name``."""
    base = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    token = secrets.token_hex(8)
    with EtcdNode(name) as node:
        upstream = procs.fakellm(base / "logs").start() if fake else None
        svc = procs.configsvc(base / "logs", [node.client_url], ENV, token).start()
        running = Fleet(base, node.client_url, token, svc, upstream)
        try:
            for i in range(sidecars):
                running.add_sidecar(f"s{i}", *sidecar_args)
            yield running
        finally:
            for proc in [*running.sidecars, svc, upstream]:
                if proc is not None:
                    proc.stop()
