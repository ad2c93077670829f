"""End to end through real processes: etcd, configsvc, sidecar, fake LLM, openai SDK client."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionUserMessageParam

from holdfast.keyspace import Keyspace
from holdfast.store.etcd import EtcdStore
from holdfast_devtools.etcd_cluster import EtcdCluster
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack, get_json, stable_is, start_stack, wait_for

pytestmark = pytest.mark.etcd
USER: ChatCompletionUserMessageParam = {"role": "user", "content": "hello"}


@pytest.fixture
def stack(tmp_path: Path, fresh_etcd: EtcdNode, etcd_env: str) -> Iterator[Stack]:
    s = start_stack(tmp_path, etcd_env, [fresh_etcd.client_url])
    s.create_releases(("r1", "model-one"), ("r2", "model-two"))
    s.set_stable("r1")
    yield s
    s.stop()


def agent(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="agent-key", max_retries=0)


async def served_by(url: str, *, stream: bool = False) -> str:
    completions = agent(url).chat.completions.with_raw_response
    if stream:
        streamed = await completions.create(model=AGENT, messages=[USER], stream=True)
        async for _ in streamed.parse():
            pass
        return str(streamed.headers["x-holdfast-release"])
    plain = await completions.create(model=AGENT, messages=[USER])
    plain.parse()
    return str(plain.headers["x-holdfast-release"])


async def test_pointer_change_under_load_without_restart_or_failure(
    stack: Stack, fresh_etcd: EtcdNode
) -> None:
    side = stack.start_sidecar([fresh_etcd.client_url])
    await wait_for(f"{side.url}/status", stable_is("r1"))
    pid = side.proc.pid if side.proc else 0
    results: list[tuple[float, str]] = []
    failures: list[BaseException] = []
    done = asyncio.Event()

    async def worker(n: int) -> None:
        while not done.is_set():
            started = time.monotonic()
            try:
                results.append((started, await served_by(side.url, stream=n % 2 == 0)))
            except openai.OpenAIError as exc:
                failures.append(exc)

    acked = 0.0

    async def operator() -> None:
        # The load runs until well after the operator's command returned, however long
        # holdfastctl took on a loaded machine: the test is about what follows the change.
        nonlocal acked
        await asyncio.sleep(1.0)
        await asyncio.to_thread(stack.ctl, "route", "set-stable", AGENT, "r2")
        acked = time.monotonic()
        await asyncio.sleep(1.5)
        done.set()

    await asyncio.gather(operator(), *(worker(n) for n in range(4)))
    assert failures == []
    assert {r for _, r in results} == {"r1", "r2"}
    # The watch delivers within milliseconds; allow a generous margin on a loaded machine.
    late = [r for started, r in results if started > acked + 0.5]
    assert late and set(late) == {"r2"}
    assert all(r == "r1" for started, r in results if started < acked - 0.9)
    assert side.proc is not None and side.proc.pid == pid and side.running


async def test_sidecar_restarted_while_etcd_is_down_serves_from_snapshot(
    stack: Stack, fresh_etcd: EtcdNode
) -> None:
    side = stack.start_sidecar([fresh_etcd.client_url], name="first")
    await wait_for(f"{side.url}/status", stable_is("r1"))
    state_dir = stack.base / "state-first"
    snapshot = state_dir / f"config-{stack.env}-{AGENT}.msgpack"
    deadline = time.monotonic() + 5
    while not snapshot.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert snapshot.exists()
    fresh_etcd.stop()
    # Its last words to etcd (health, budgets, pins, outcomes) are said side by side, each
    # bounded by 2 s: an etcd outage costs the exit one bound, not one per component (was 6 s).
    stopping = time.monotonic()
    assert side.stop() == 0
    assert time.monotonic() - stopping < 4.0
    again = stack.start_sidecar([fresh_etcd.client_url], name="second", state_dir=state_dir)
    # It listens at once: nothing in its start waits on the down etcd (a failed call takes 2 s).
    events = [e.get("event") for e in again.log_events()]
    assert "sidecar_listening" in events
    assert "watch_broken" not in events[: events.index("sidecar_listening")], events
    assert await served_by(again.url) == "r1"
    assert await served_by(again.url, stream=True) == "r1"
    status, ready = await get_json(f"{again.url}/readyz")
    assert status == 200 and ready["source"] == "snapshot"
    body = await wait_for(f"{again.url}/status", lambda b: b["config"]["stale"])
    assert body["etcd"]["connected"] is False
    # etcd comes back: the sidecar catches up on its own and is no longer stale.
    fresh_etcd.start().wait_ready()
    stack.ctl("route", "set-stable", AGENT, "r2")
    body = await wait_for(f"{again.url}/status", stable_is("r2"), timeout=20)
    assert body["config"]["source"] == "etcd" and body["config"]["stale"] is False
    assert await served_by(again.url) == "r2"


async def test_poison_record_is_refused_and_the_previous_route_kept(
    stack: Stack, fresh_etcd: EtcdNode
) -> None:
    side = stack.start_sidecar([fresh_etcd.client_url])
    await wait_for(f"{side.url}/status", stable_is("r1"))
    store = EtcdStore([fresh_etcd.client_url])
    await store.connect()
    try:
        await store.put(Keyspace(stack.env).route(AGENT), b"\x93not-a-record")
    finally:
        await store.close()
    body = await wait_for(f"{side.url}/status", lambda b: b["config"]["rejected_records"])
    assert body["route"]["stable"] == "r1"
    assert (
        "msgpack" in body["config"]["rejected_records"][0]["reason"]
        or "record" in (body["config"]["rejected_records"][0]["reason"])
    )
    assert await served_by(side.url) == "r1"


async def test_sigterm_drains_an_in_flight_stream_and_exits_zero(
    stack: Stack, fresh_etcd: EtcdNode
) -> None:
    side = stack.start_sidecar([fresh_etcd.client_url])
    await wait_for(f"{side.url}/status", stable_is("r1"))
    async with aiohttp.ClientSession() as http:
        await http.put(
            f"{stack.fake.url}/_control/models/model-one",
            json={"token_interval_ms": 40, "completion_tokens": 30},
        )
        body = {"model": AGENT, "messages": [USER], "stream": True}
        async with http.post(f"{side.url}/v1/chat/completions", json=body) as resp:
            first = await resp.content.readline()
            assert first.startswith(b"data: ")
            assert side.proc is not None
            side.proc.send_signal(signal.SIGTERM)
            rest = await resp.content.read()
    assert rest.rstrip().endswith(b"data: [DONE]")
    assert side.proc.wait(10) == 0


async def model_stats(fake_url: str, model: str) -> dict[str, int]:
    _, body = await get_json(f"{fake_url}/_control/stats")
    stats: dict[str, int] = body["models"].get(model, {})
    return stats


async def until_in_flight(fake_url: str, model: str, count: int) -> None:
    """Wait until the provider is serving ``count`` requests: they are truly in flight."""
    deadline = time.monotonic() + 10
    while (await model_stats(fake_url, model)).get("in_flight", 0) < count:
        assert time.monotonic() < deadline, await model_stats(fake_url, model)
        await asyncio.sleep(0.02)


async def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_sigterm_under_load_drains_every_request_in_flight_and_exits_zero(
    stack: Stack, fresh_etcd: EtcdNode
) -> None:
    """Streams and plain requests in flight when SIGTERM lands all complete in full; the
    listener closes at once; the process exits 0 well inside --drain-timeout."""
    drain_timeout = 6.0
    side = stack.start_sidecar(
        [fresh_etcd.client_url], args=("--drain-timeout", str(drain_timeout))
    )
    await wait_for(f"{side.url}/status", stable_is("r1"))
    async with aiohttp.ClientSession() as http:
        behaviour = {"token_interval_ms": 60, "completion_tokens": 20, "latency_ms": 1200}
        await http.put(f"{stack.fake.url}/_control/models/model-one", json=behaviour)

        async def stream(n: int) -> tuple[int, bytes]:
            body = {"model": AGENT, "messages": [USER], "stream": True, "user": f"s{n}"}
            async with http.post(f"{side.url}/v1/chat/completions", json=body) as resp:
                return resp.status, await resp.content.read()

        async def plain(n: int) -> tuple[int, bytes]:
            body = {"model": AGENT, "messages": [USER], "user": f"p{n}"}
            async with http.post(f"{side.url}/v1/chat/completions", json=body) as resp:
                return resp.status, await resp.read()

        load = asyncio.gather(*(stream(n) for n in range(4)), *(plain(n) for n in range(4)))
        await until_in_flight(stack.fake.url, "model-one", 8)
        assert side.proc is not None
        side.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while not await refuses_connections(side.url):  # the listener closes at once...
            assert time.monotonic() - signalled < 1.0
            await asyncio.sleep(0.02)
        assert not load.done()  # ...while the requests in flight are still being served
        results = await load
    assert [status for status, _ in results] == [200] * 8
    for _, raw in results[:4]:
        assert raw.rstrip().endswith(b"data: [DONE]") and b'"error"' not in raw, raw[-200:]
    for _, raw in results[4:]:
        assert json.loads(raw)["choices"][0]["message"]["content"]
    code = await asyncio.to_thread(side.proc.wait, drain_timeout)
    assert code == 0 and time.monotonic() - signalled < drain_timeout
    events = [e["event"] for e in side.log_events()]
    assert "sidecar_drained" in events and "sidecar_drain_timeout_cut" not in events


async def test_requests_that_outlast_the_drain_timeout_are_cut_and_the_exit_is_in_time(
    stack: Stack, fresh_etcd: EtcdNode
) -> None:
    """A stream still running at --drain-timeout ends with an in-band error event; a request
    still waiting for its provider gets 503 with Retry-After; the process exits 0 on time."""
    drain_timeout = 1.5
    side = stack.start_sidecar(
        [fresh_etcd.client_url], args=("--drain-timeout", str(drain_timeout))
    )
    await wait_for(f"{side.url}/status", stable_is("r1"))
    async with aiohttp.ClientSession() as http:
        behaviour = {"token_interval_ms": 100, "completion_tokens": 100, "latency_ms": 20_000}
        await http.put(f"{stack.fake.url}/_control/models/model-one", json=behaviour)
        body = {"model": AGENT, "messages": [USER]}

        async def plain() -> tuple[int, str, dict[str, Any], float]:
            async with http.post(f"{side.url}/v1/chat/completions", json=body) as resp:
                answer = await resp.json()
                return resp.status, resp.headers.get("Retry-After", ""), answer, time.monotonic()

        waiting = asyncio.ensure_future(plain())
        async with http.post(
            f"{side.url}/v1/chat/completions", json=body | {"stream": True}
        ) as sse:
            assert sse.status == 200
            assert (await sse.content.readline()).startswith(b"data: ")
            await until_in_flight(stack.fake.url, "model-one", 2)
            assert side.proc is not None
            side.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            rest = await sse.content.read()
            stream_cut = time.monotonic() - signalled
        status, retry_after, answer, answered = await waiting
    assert status == 503 and retry_after == "1", answer
    refused, plain_cut = answer["error"], answered - signalled
    events = [json.loads(e[6:]) for e in rest.split(b"\n\n") if e.startswith(b"data: {")]
    assert events and events[-1]["error"]["code"] == "shutting_down", rest[-300:]
    assert "drain timeout" in events[-1]["error"]["message"]
    assert b"[DONE]" not in rest and any(e.get("choices") for e in events[:-1])
    assert refused["code"] == "shutting_down" and "drain timeout" in refused["message"]
    assert drain_timeout - 0.1 <= stream_cut < drain_timeout + 1.0
    assert plain_cut < drain_timeout + 1.0
    code = await asyncio.to_thread(side.proc.wait, drain_timeout + 5)
    assert code == 0 and time.monotonic() - signalled < drain_timeout + 2.5
    assert "sidecar_drain_timeout_cut" in [e["event"] for e in side.log_events()]


def watching(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """The initial list arrives before the watch exists; cut etcd off only once both did."""
    return lambda body: bool(body["etcd"]["connected"]) and check(body)


@pytest.fixture
def cluster_stack(tmp_path: Path, etcd_cluster: EtcdCluster, etcd_env: str) -> Iterator[Stack]:
    # configsvc talks to members 1 and 2; the sidecar under test only to member 0.
    s = start_stack(tmp_path, etcd_env, etcd_cluster.endpoints[1:])
    s.create_releases(("r1", "model-one"), ("r2", "model-two"), ("r3", "model-three"))
    s.set_stable("r1")
    yield s
    s.stop()


async def test_watch_resumes_after_its_etcd_member_restarts_without_missing_a_change(
    cluster_stack: Stack, etcd_cluster: EtcdCluster
) -> None:
    member = etcd_cluster.nodes[0]
    side = cluster_stack.start_sidecar([member.client_url])
    await wait_for(f"{side.url}/status", watching(stable_is("r1")))
    member.stop()
    cluster_stack.ctl("route", "set-stable", AGENT, "r2")  # written while the sidecar is cut off
    assert await served_by(side.url) == "r1"  # still serving on last-known config
    member.start().wait_ready()
    body = await wait_for(f"{side.url}/status", stable_is("r2"), timeout=20)
    assert body["etcd"]["reconnects"] >= 1
    assert body["etcd"]["resyncs"] == 0  # resumed from its revision, no full re-list needed
    assert await served_by(side.url) == "r2"


async def test_compaction_while_disconnected_forces_a_full_resync(
    cluster_stack: Stack, etcd_cluster: EtcdCluster
) -> None:
    member = etcd_cluster.nodes[0]
    side = cluster_stack.start_sidecar([member.client_url])
    await wait_for(f"{side.url}/status", watching(lambda b: len(b["releases"]) == 3))
    member.stop()
    cluster_stack.ctl("route", "set-stable", AGENT, "r2")
    ks = Keyspace(cluster_stack.env)
    store = EtcdStore(etcd_cluster.endpoints[1:])
    await store.connect()
    try:
        await store.delete(ks.release(AGENT, "r3"))  # operators never do this; a test may
        await store.compact(await store.revision())
    finally:
        await store.close()
    member.start().wait_ready()
    body = await wait_for(f"{side.url}/status", stable_is("r2"), timeout=20)
    assert body["etcd"]["resyncs"] >= 1
    assert sorted(r["release"] for r in body["releases"]) == ["r1", "r2"]
    assert await served_by(side.url) == "r2"
