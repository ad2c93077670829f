"""Tier 2: the sidecar's real HTTP app in-process, in front of a real fake-upstream process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from holdfast.keyspace import Keyspace, Release, Route
from holdfast.store import Change, KeyValue
from holdfast.store.memory import MemoryStore
from holdfast_devtools import procs
from sidecar.budgets.filter import BudgetFilter
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState
from sidecar.http.app import Parts, build_http_app
from sidecar.ops.metrics import SidecarMetrics
from sidecar.pins.claim import PinClaims
from sidecar.pins.pinning import Pinning
from sidecar.pins.state_lookup import StateLookup
from sidecar.pins.states import StateTable
from sidecar.pins.table import PinTable
from sidecar.pins.writer import PinWriter
from sidecar.settings.limits import server_options
from sidecar.settings.model import SidecarSettings
from sidecar.upstream.client import Upstream

AGENT = "support"
PROVIDER_KEY = "sk-provider-canary-7f3a"
KEY_VAR = "TEST_PROVIDER_KEY"
KS = Keyspace("dev")


@pytest.fixture(scope="session")
def fakellm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.ManagedProcess]:
    proc = procs.fakellm(tmp_path_factory.mktemp("fakellm"), "--require-key", PROVIDER_KEY).start()
    yield proc
    proc.stop()


@dataclass
class StaticControl:
    """The ops view of the control plane, set by the test (the etcd tier tests the real one)."""

    connected: bool = True
    last_contact: float | None = 0.0
    revision: int = 0
    resyncs: int = 0
    reconnects: int = 0


@dataclass
class SidecarUnderTest:
    server: TestServer
    config: ConfigState
    control: StaticControl
    fake_url: str
    pins: PinTable
    pin_writer: PinWriter
    states: StateTable
    revision: int = 10
    environ: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def add_release(
        self,
        name: str,
        model: str,
        base_url: str | None = None,
        key_var: str = KEY_VAR,
        *,
        embedding_model: str = "",
        index_version: str = "",
        provider: str = "openai",
        api_version: str = "",
    ) -> None:
        release = Release(
            agent=AGENT,
            name=name,
            model=model,
            base_url=base_url or f"{self.fake_url}/v1",
            api_key_env=key_var,
            embedding_model=embedding_model,
            index_version=index_version,
            provider=provider,
            api_version=api_version,
        )
        self._put(KS.release(AGENT, name), release.encode())

    def set_stable(
        self, name: str, aliases: tuple[str, ...] = (), canary: str = "", percent: float = 0.0
    ) -> None:
        route = Route(
            agent=AGENT, stable=name, aliases=aliases, canary=canary, canary_percent=percent
        )
        self._put(KS.route(AGENT), route.encode())

    def _put(self, key: str, value: bytes) -> None:
        self.revision += 1
        if self.config.current is None:
            self.config.apply_reset(
                self.revision, {key: KeyValue(key, value, self.revision, 1, 1)}, "etcd"
            )
        else:
            self.config.apply_changes(self.revision, [Change("put", key, value, self.revision)])


def settings(**over: object) -> SidecarSettings:
    values: dict[str, object] = {
        "agent": AGENT,
        "max_body_bytes": 64 * 1024,
        "request_timeout": 5.0,
        "first_byte_timeout": 5.0,
        "stream_idle_timeout": 2.0,
    }
    values.update(over)
    return SidecarSettings(**values)  # type: ignore[arg-type]


BudgetFactory = Callable[[ConfigState, SidecarMetrics], BudgetFilter]


async def start_sidecar(
    fake_url: str,
    *,
    budget: BudgetFactory | None = None,
    parts: dict[str, Any] | None = None,
    pin_store: MemoryStore | None = None,
    **over: object,
) -> SidecarUnderTest:
    """The HTTP surface as ``Sidecar.build_app`` makes it, over a config fed by hand; ``budget``
    builds the budget filter (none by default), ``parts`` overrides further ``Parts``;
    ``pin_store``: a store that is up, so first turns are claimed in it (as with etcd)."""
    s = settings(**over)
    config = ConfigState(KS, AGENT, kinds=CONFIG_KINDS)
    environ = {KEY_VAR: PROVIDER_KEY}
    upstream = Upstream(s, environ)
    await upstream.start()
    control = StaticControl()
    metrics = SidecarMetrics(AGENT)
    # No etcd in this tier: pin writes queue against a store that is down, as in an outage.
    store = pin_store or MemoryStore()
    store.unavailable = pin_store is None
    pins = PinTable(KS, AGENT)
    writer = PinWriter(store, pins, KS, metrics.pins, ttl=s.pin_ttl, max_pending=s.max_pending_pins)
    claims = None
    if pin_store is not None:
        claims = PinClaims(store, KS, writer, metrics.pins, timeout=0.5)
    pinning = Pinning(AGENT, pins, metrics.pins, ttl=s.pin_ttl, claims=claims)
    metrics.pins.bind(lambda: len(pins), lambda: writer.pending)
    await writer.start()
    # No etcd to ask either: a state id this sidecar did not record is unknown (404).
    states = StateTable(KS, AGENT)
    lookup = StateLookup(None, states, KS, AGENT, timeout=0.25)
    state_parts: dict[str, Any] = {"states": states, "state_lookup": lookup, **(parts or {})}
    app = build_http_app(
        Parts(
            settings=s,
            config=config,
            upstream=upstream,
            metrics=metrics,
            control=control,
            etcd_endpoint=lambda: "none",
            pinning=pinning,
            pins_status=writer.status,
            budget=budget(config, metrics) if budget is not None else None,
            **state_parts,
        )
    )

    async def cleanup(_app: object) -> None:
        await writer.close(flush_timeout=0)
        await store.close()
        await upstream.close()

    app.on_cleanup.append(cleanup)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**server_options(s.limits))  # header limits, idle timeout
    return SidecarUnderTest(
        server, config, control, fake_url, pins, writer, states, environ=environ
    )


@pytest.fixture
async def sidecar(fakellm: procs.ManagedProcess) -> AsyncIterator[SidecarUnderTest]:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{fakellm.url}/_control/reset")
    sut = await start_sidecar(fakellm.url)
    sut.add_release("r1", "model-one")
    sut.add_release("r2", "model-two")
    sut.set_stable("r1", aliases=("helper",))
    yield sut
    await sut.server.close()


@pytest.fixture
def tmp_state(tmp_path: Path) -> Path:
    return tmp_path
