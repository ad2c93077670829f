"""Tier 2: POST /tools/{tool} against a real tool backend: validation, faults, breaker, retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from holdfast.contracts.breaker import DEFAULT_FAILURE_THRESHOLD, DEFAULT_RESET_AFTER_S
from holdfast_devtools import procs
from sidecar.contracts.backend import DEFAULT_MAX_RESULT_BYTES
from tests.servers.contract_stack import (
    SEARCH_V1,
    SEARCH_V2,
    Backend,
    ContractSidecar,
    backend_server,
    contract_sidecar,
)

# Long enough that a loaded machine never turns a fast fault (HTTP 500, a huge body) into a
# timeout; the timeout cases wait past it (the dribbling backend writes for 2 x DRIBBLE_S).
TIMEOUT_S = 1.5


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with backend_server() as b:
        yield b


@pytest.fixture
async def sut(fakellm: procs.ManagedProcess, backend: Backend) -> AsyncIterator[ContractSidecar]:
    async with contract_sidecar(fakellm.url) as sidecar:
        sidecar.contract("1.0.0", SEARCH_V1, backend=backend.url, timeout_s=TIMEOUT_S)
        sidecar.contract(
            "1.1.0", SEARCH_V1, backend=backend.url, timeout_s=TIMEOUT_S, idempotent=True
        )
        sidecar.contract("2.0.0", SEARCH_V2, backend=backend.url, timeout_s=TIMEOUT_S)
        sidecar.contract("9.0.0", SEARCH_V1)  # no backend: the agent runs it itself
        sidecar.release("r1", {"search": "1.0.0"})
        sidecar.release("ri", {"search": "1.1.0"})
        sidecar.release("r2", {"search": "2.0.0"})
        sidecar.release("rn", {"search": "9.0.0"})
        sidecar.release("none", {})
        sidecar.stable("r1")
        yield sidecar


async def call(
    sut: ContractSidecar, body: Any, *, session: str = "s1", raw: bytes | None = None
) -> tuple[int, dict[str, str], Any]:
    headers = {"X-Holdfast-Session": session, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with http.post(f"{sut.url}/tools/search", headers=headers, **kwargs) as resp:
            return resp.status, dict(resp.headers), await resp.json()


def text(result: dict[str, Any]) -> str:
    return str(result["content"][0]["text"])


async def test_good_call_is_validated_both_ways(sut: ContractSidecar, backend: Backend) -> None:
    status, headers, result = await call(sut, {"query": "holdfast", "limit": 3})
    assert status == 200 and result["isError"] is False
    assert result["structuredContent"] == {"hits": [{"title": "Holdfast", "url": "https://x/1"}]}
    assert headers["X-Holdfast-Contract"] == "search@1.0.0"
    assert headers["X-Holdfast-Release"] == "r1" and headers["X-Holdfast-Tool-Outcome"] == "ok"
    assert backend.seen == [{"query": "holdfast", "limit": 3}]


async def test_bad_arguments_never_reach_the_backend(
    sut: ContractSidecar, backend: Backend
) -> None:
    status, headers, result = await call(sut, {"query": "", "color": "red"})
    assert status == 200 and result["isError"] is True
    assert "do not match the search@1.0.0 contract" in text(result)
    assert headers["X-Holdfast-Contract-Violation"] == "search@1.0.0 args"
    assert backend.calls == 0
    status, _, err = await call(sut, None, raw=b"{not json")
    assert status == 400 and err["error"]["code"] == "invalid_request"
    status, _, err = await call(sut, None, raw=b"[1, 2]")
    assert status == 400 and "JSON object" in err["error"]["message"]


@pytest.mark.parametrize(
    ("fault", "delay", "outcome", "words"),
    [
        ("", 2 * TIMEOUT_S, "timeout", f"took over {TIMEOUT_S:g}s"),
        ("dribble", 0.0, "timeout", f"took over {TIMEOUT_S:g}s"),
        ("huge", 0.0, "too_large", f"larger than {DEFAULT_MAX_RESULT_BYTES} bytes"),
        ("500", 0.0, "backend_error", "HTTP 500"),
        ("not_json", 0.0, "not_json", "not JSON"),
        ("400", 0.0, "backend_rejected", "unknown query syntax"),
    ],
)
async def test_backend_faults_become_error_results(
    sut: ContractSidecar, backend: Backend, fault: str, delay: float, outcome: str, words: str
) -> None:
    backend.fault, backend.delay = fault, delay
    status, headers, result = await call(sut, {"query": "q"})
    assert status == 200 and result["isError"] is True and words in text(result)
    assert headers["X-Holdfast-Tool-Outcome"] == outcome
    assert result["_meta"]["holdfast"] == {"outcome": outcome, "contract": "search@1.0.0"}
    assert backend.calls == 1  # not idempotent: never retried


async def test_idempotent_tools_get_one_retry(sut: ContractSidecar, backend: Backend) -> None:
    backend.fault = "500"
    sut.stable("ri")
    status, _, result = await call(sut, {"query": "q"}, session="idem")
    assert status == 200 and result["isError"] is True and backend.calls == 2


async def test_unreachable_backend_and_the_breaker(fakellm: procs.ManagedProcess) -> None:
    async with contract_sidecar(fakellm.url) as sut:
        sut.contract("1.0.0", SEARCH_V1, backend="http://127.0.0.1:9/search", timeout_s=TIMEOUT_S)
        sut.release("r1", {"search": "1.0.0"})
        sut.stable("r1")
        outcomes = []
        for _ in range(7):
            _, headers, result = await call(sut, {"query": "q"})
            assert result["isError"] is True
            outcomes.append(headers["X-Holdfast-Tool-Outcome"])
        assert outcomes == ["unreachable"] * 5 + ["circuit_open"] * 2
        assert b'holdfast_tool_circuit_state{backend="http://127.0.0.1:9/search"} 2.0' in (
            sut.metrics.render()
        )


async def test_release_without_the_tool_or_without_a_backend(sut: ContractSidecar) -> None:
    sut.stable("none")
    status, _, err = await call(sut, {"query": "q"}, session="n1")
    assert status == 404 and err["error"]["code"] == "tool_not_pinned"
    sut.stable("rn")
    status, _, err = await call(sut, {"query": "q"}, session="n2")
    assert status == 400 and err["error"]["code"] == "tool_not_proxied"


async def test_backend_breaks_its_result_shape_mid_run(
    sut: ContractSidecar, backend: Backend
) -> None:
    """v1 -> v2 breaking on the backend: sessions pinned to v1 degrade, never fail; v2 works,
    also after v1's breaker opened; v1's breaker recovers through a half-open probe."""
    now = [1000.0]
    sut.proxy.clock = lambda: now[0]
    for s in ("a", "b", "c"):
        _, headers, result = await call(sut, {"query": "q"}, session=s)
        assert result["isError"] is False and headers["X-Holdfast-Release"] == "r1"
    backend.shape = "v2"
    outcomes = []
    for i in range(7):
        status, headers, result = await call(sut, {"query": "q"}, session="abc"[i % 3])
        assert status == 200 and result["isError"] is True
        outcomes.append(headers["X-Holdfast-Tool-Outcome"])
        if outcomes[-1] == "invalid_result":
            assert "breaks the search@1.0.0 contract" in text(result)
            assert headers["X-Holdfast-Contract-Violation"] == "search@1.0.0 result"
    assert outcomes == ["invalid_result"] * 5 + ["circuit_open"] * 2
    assert "sessions pinned to other versions are not affected" in text(result)
    assert backend.calls == 3 + 5  # an open breaker does not call the backend
    sut.stable("r2")  # the operator ships a release pinning 2.0.0; new sessions get it
    status, headers, result = await call(sut, {"query": "q"}, session="new")
    assert result == {
        "isError": False,
        "content": [{"type": "text", "text": '{"results": ["Holdfast"]}'}],
        "structuredContent": {"results": ["Holdfast"]},
    }
    assert headers["X-Holdfast-Release"] == "r2"
    metrics = sut.metrics.render()
    assert b'holdfast_tool_result_circuit_state{tool="search",version="1.0.0"} 2.0' in metrics
    assert b'holdfast_tool_result_circuit_state{tool="search",version="2.0.0"} 0.0' in metrics
    assert f'holdfast_tool_circuit_state{{backend="{backend.url}"}} 0.0'.encode() in metrics

    now[0] += DEFAULT_RESET_AFTER_S  # half-open: one probe; still v2, so open again
    _, headers, _ = await call(sut, {"query": "q"}, session="a")
    assert headers["X-Holdfast-Tool-Outcome"] == "invalid_result"
    _, headers, _ = await call(sut, {"query": "q"}, session="b")
    assert headers["X-Holdfast-Tool-Outcome"] == "circuit_open"
    now[0] += DEFAULT_RESET_AFTER_S
    backend.shape = "v1"  # the backend's v1 shape is back: the probe closes the breaker
    for s in ("a", "b", "c"):
        _, headers, result = await call(sut, {"query": "q"}, session=s)
        assert headers["X-Holdfast-Tool-Outcome"] == "ok" and result["isError"] is False
    _, status_body = await get_status(sut)
    assert status_body["contracts"]["result_breakers"]["search@1.0.0"]["times_opened"] == 2
    stats = {(s["release"], s["tool"]): s for s in sut.metrics.contracts.stats()}
    assert stats[("r1", "search")]["violations"] == {"result": 6}
    assert stats[("r1", "search")]["errors"] == {"invalid_result": 6, "circuit_open": 3}
    assert stats[("r2", "search")]["errors_total"] == 0


async def test_half_open_lets_one_probe_through(sut: ContractSidecar, backend: Backend) -> None:
    now = [1000.0]
    sut.proxy.clock = lambda: now[0]
    backend.fault = "500"
    for _ in range(DEFAULT_FAILURE_THRESHOLD):
        await call(sut, {"query": "q"})
    _, headers, result = await call(sut, {"query": "q"}, session="v2")
    assert headers["X-Holdfast-Tool-Outcome"] == "circuit_open"
    assert "backend is failing" in text(result)
    sut.stable("r2")  # the backend breaker stops every version
    _, headers, _ = await call(sut, {"query": "q"}, session="other")
    assert headers["X-Holdfast-Tool-Outcome"] == "circuit_open"
    sut.stable("r1")
    calls = backend.calls
    now[0] += DEFAULT_RESET_AFTER_S
    backend.fault, backend.delay = "", 0.3  # a slow probe, with others arriving meanwhile
    answers = await asyncio.gather(*(call(sut, {"query": "q"}, session=f"p{i}") for i in range(4)))
    outcomes = sorted(headers["X-Holdfast-Tool-Outcome"] for _, headers, _ in answers)
    assert outcomes == ["circuit_open"] * 3 + ["ok"] and backend.calls == calls + 1
    backend.delay = 0.0
    answers = await asyncio.gather(*(call(sut, {"query": "q"}, session=f"p{i}") for i in range(4)))
    assert [h["X-Holdfast-Tool-Outcome"] for _, h, _ in answers] == ["ok"] * 4


async def test_oversized_arguments_are_413(sut: ContractSidecar, backend: Backend) -> None:
    limit = 64 * 1024  # the sidecar's body limit in this tier (tests.servers.conftest.settings)
    big = b'{"query": "' + b"q" * limit + b'"}'
    status, _, err = await call(sut, None, raw=big)
    assert status == 413 and err["error"]["code"] == "request_too_large"
    assert f"over the {limit}-byte limit" in err["error"]["message"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: refused while reading
        yield b'{"query": "'
        for _ in range(limit // 1024 + 1):
            yield b"q" * 1024
        yield b'"}'

    headers = {"X-Holdfast-Session": "s1", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sut.url}/tools/search", data=chunked(), headers=headers) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "request_too_large"
    assert backend.calls == 0


async def test_oversized_answer_without_content_length(
    sut: ContractSidecar, backend: Backend
) -> None:
    backend.fault = "huge_chunked"
    status, headers, result = await call(sut, {"query": "q"})
    assert status == 200 and headers["X-Holdfast-Tool-Outcome"] == "too_large"
    assert f"larger than {DEFAULT_MAX_RESULT_BYTES} bytes" in text(result)
    assert backend.chunks_sent < 32  # it stopped reading near 1 MiB, not at the end (4 MiB)


async def get_status(sut: ContractSidecar) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sut.url}/status") as r:
            return r.status, await r.json()
