"""OpenTelemetry traces from the real sidecar app, exported by the real OTLP/HTTP exporter to an
in-process collector (holdfast_devtools.otlp_sink): the spans of a streamed chat, a chat whose
answer calls a tool, a budget refusal and a call through ``POST /tools``, with their GenAI and
Holdfast attributes, and the parent/child links from the agent's ``traceparent`` through the
sidecar's span to what the provider and the tool backend receive."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from holdfast.keyspace.budget import Budget
from holdfast_devtools import procs
from holdfast_devtools.otlp_sink import CLIENT, INTERNAL, STATUS_ERROR, CollectedSpan, OtlpSink
from sidecar.tracing.otel import OtelTracer, tracer
from tests.servers.conftest import AGENT, KS, SidecarUnderTest
from tests.servers.contract_stack import SEARCH_V1, backend_server, contract_sidecar
from tests.servers.test_budget_filter import start_budgeted

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


class Agent:
    """The agent's side of a trace: its own span, sent as ``traceparent``."""

    def __init__(self) -> None:
        self.trace_id = secrets.token_hex(16)
        self.span_id = secrets.token_hex(8)

    @property
    def headers(self) -> dict[str, str]:
        return {"traceparent": f"00-{self.trace_id}-{self.span_id}-01", "tracestate": "agent=1"}


def parent_of(traceparent: str) -> tuple[str, str]:
    version, trace_id, parent, flags = traceparent.split("-")
    assert (version, flags) == ("00", "01"), traceparent
    return trace_id, parent


@pytest.fixture
async def sink() -> AsyncIterator[OtlpSink]:
    s = await OtlpSink().start()
    yield s
    await s.close()


def new_tracer(sink: OtlpSink) -> OtelTracer:
    return tracer(endpoint=sink.url, agent=AGENT, env="dev", sidecar_id="support.test-1",
                  environ={})  # fmt: skip


async def flush(t: OtelTracer) -> None:
    assert await asyncio.to_thread(t.provider.force_flush)


@pytest.fixture
async def traced(
    fakellm: procs.ManagedProcess, sink: OtlpSink
) -> AsyncIterator[tuple[SidecarUnderTest, OtelTracer]]:
    t = new_tracer(sink)
    sut, _ = await start_budgeted(fakellm, parts={"tracer": t})
    yield sut, t
    await sut.server.close()
    await t.close()


async def provider_requests(sut: SidecarUnderTest) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sut.fake_url}/_control/requests") as resp:
            return list((await resp.json())["requests"])


async def post(sut: SidecarUnderTest, body: dict[str, Any], headers: dict[str, str]) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sut.url}/v1/chat/completions", json={"model": AGENT, **body}, headers=headers
        ) as resp:
            text = await resp.text()
            assert resp.status in (200, 429), text
            return text


def one(spans: list[CollectedSpan], session: str) -> CollectedSpan:
    found = [s for s in spans if s.attributes.get("gen_ai.conversation.id") == session]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_streamed_and_tool_calling_chats_continue_the_agents_trace(
    traced: tuple[SidecarUnderTest, OtelTracer], sink: OtlpSink
) -> None:
    sut, t = traced
    streamed, calling = Agent(), Agent()
    messages = [{"role": "user", "content": "hello there"}]
    await post(
        sut,
        {"messages": messages, "stream": True, "stream_options": {"include_usage": True}},
        {**streamed.headers, "X-Holdfast-Session": "s-stream", "X-Holdfast-Category": "billing"},
    )
    await post(
        sut,
        {"messages": messages, "tools": TOOLS, "tool_choice": "required", "max_tokens": 50},
        {**calling.headers, "X-Holdfast-Session": "s-tool"},
    )
    await flush(t)
    spans = await sink.wait_for(lambda s: s.name == "chat model-one", count=2)

    stream_span = one(spans, "s-stream")
    assert stream_span.kind == CLIENT
    assert (stream_span.trace_id, stream_span.parent_span_id) == (
        streamed.trace_id,
        streamed.span_id,
    )
    attrs = stream_span.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == "model-one"
    assert attrs["gen_ai.response.model"] == "model-one"
    assert attrs["gen_ai.response.id"]
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] > 0
    assert attrs["holdfast.release"] == "r1" and attrs["holdfast.pin"] == "new"
    assert attrs["holdfast.category"] == "billing" and attrs["holdfast.request_id"]
    assert attrs["http.response.status_code"] == 200 and "holdfast.outcome" not in attrs
    assert attrs["holdfast.time_to_first_chunk_s"] > 0  # a stream
    assert stream_span.status_code != STATUS_ERROR
    assert stream_span.end_ns > stream_span.start_ns
    assert stream_span.resource["service.name"] == "holdfast-sidecar"
    assert stream_span.resource["holdfast.agent"] == AGENT

    tool_span = one(spans, "s-tool")
    assert tool_span.trace_id == calling.trace_id
    assert tool_span.parent_span_id == calling.span_id
    assert tool_span.attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert tool_span.attributes["holdfast.tool_calls"] == ["lookup"]
    assert tool_span.attributes["gen_ai.request.max_tokens"] == 50
    assert "holdfast.time_to_first_chunk_s" not in tool_span.attributes  # not a stream

    # The provider was called as a child of the sidecar's span, in the agent's trace.
    seen = {
        r["body"]["messages"] and r["headers"].get("traceparent"): r["headers"]
        for r in await provider_requests(sut)
    }
    for agent, span in ((streamed, stream_span), (calling, tool_span)):
        sent = [h for tp, h in seen.items() if tp and parent_of(tp)[0] == agent.trace_id]
        assert len(sent) == 1
        assert parent_of(sent[0]["traceparent"]) == (agent.trace_id, span.span_id)
        assert sent[0]["tracestate"] == "agent=1"


async def test_no_or_bad_traceparent_starts_a_trace_and_a_refusal_is_an_error_span(
    traced: tuple[SidecarUnderTest, OtelTracer], sink: OtlpSink
) -> None:
    sut, t = traced
    messages = [{"role": "user", "content": "hi"}]
    await post(sut, {"messages": messages}, {"X-Holdfast-Session": "s-none"})
    await post(sut, {"messages": messages}, {"X-Holdfast-Session": "s-bad", "traceparent": "zz"})
    budget = Budget(scope="session:s-broke", tokens=1, window="1h")
    sut._put(KS.budget(budget.scope), budget.encode())
    await post(sut, {"messages": messages}, {"X-Holdfast-Session": "s-broke"})
    await flush(t)
    spans = await sink.wait_for(lambda s: s.name == "chat model-one", count=3)
    for session in ("s-none", "s-bad"):
        span = one(spans, session)
        assert span.parent_span_id == "" and len(span.trace_id) == 32
        assert "holdfast.budget.admission" not in span.attributes  # no budget applies
    refused = one(spans, "s-broke")
    assert refused.status_code == STATUS_ERROR
    assert refused.attributes["holdfast.budget.admission"] == "refused"
    assert refused.attributes["holdfast.refused_by"] == "budget_exhausted"
    assert refused.attributes["holdfast.outcome"] == "refused"
    assert refused.attributes["error.type"] == "budget_exhausted"
    assert "gen_ai.usage.input_tokens" not in refused.attributes


async def test_tool_call_span_is_the_parent_of_the_backend_call(
    fakellm: procs.ManagedProcess, sink: OtlpSink
) -> None:
    t = new_tracer(sink)
    agent = Agent()
    try:
        async with backend_server() as backend, contract_sidecar(fakellm.url, tracer=t) as sut:
            sut.contract("1.0.0", SEARCH_V1, backend=backend.url, timeout_s=2.0)
            sut.release("r1", {"search": "1.0.0"})
            sut.stable("r1")
            headers = {**agent.headers, "X-Holdfast-Session": "s-t"}
            async with aiohttp.ClientSession() as http:
                for args in ({"query": "holdfast"}, {"limit": 3}):  # the second breaks it
                    url = f"{sut.url}/tools/search"
                    async with http.post(url, json=args, headers=headers) as r:
                        assert r.status == 200, await r.text()
                async with http.post(f"{sut.url}/tools/nope", json={}, headers=headers) as r:
                    assert r.status == 404
            await flush(t)
            spans = await sink.wait_for(lambda s: s.name.startswith("execute_tool"), count=3)
    finally:
        await t.close()
    ok, invalid = (s for s in spans if s.name == "execute_tool search")
    assert ok.kind == INTERNAL
    assert (ok.trace_id, ok.parent_span_id) == (agent.trace_id, agent.span_id)
    assert ok.attributes["gen_ai.operation.name"] == "execute_tool"
    assert ok.attributes["gen_ai.tool.name"] == "search"
    assert ok.attributes["gen_ai.tool.type"] == "extension"
    assert ok.attributes["holdfast.contract"] == "search@1.0.0"
    assert ok.attributes["holdfast.tool.outcome"] == "ok"
    assert ok.attributes["holdfast.release"] == "r1"
    assert ok.attributes["gen_ai.conversation.id"] == "s-t"
    assert ok.status_code != STATUS_ERROR
    assert invalid.attributes["holdfast.tool.outcome"] == "invalid_args"
    assert invalid.status_code == STATUS_ERROR
    unknown = next(s for s in spans if s.name == "execute_tool nope")
    assert unknown.attributes["error.type"] == "tool_not_pinned"
    # Only the valid call reached the backend, as a child of its span.
    assert len(backend.headers) == 1
    assert parent_of(backend.headers[0]["traceparent"]) == (agent.trace_id, ok.span_id)


async def test_tracing_off_sends_no_trace_context(
    fakellm: procs.ManagedProcess,
) -> None:
    sut, _ = await start_budgeted(fakellm)
    try:
        await post(
            sut,
            {"messages": [{"role": "user", "content": "hi"}]},
            {**Agent().headers, "X-Holdfast-Session": "s-off"},
        )
        sent = await provider_requests(sut)
    finally:
        await sut.server.close()
    assert sent and all("traceparent" not in r["headers"] for r in sent)


async def test_a_dropped_span_exports_nothing_but_passes_the_context_on(
    fakellm: procs.ManagedProcess, sink: OtlpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK's own variables, as an operator sets them: keep no new trace, follow no parent.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    t = new_tracer(sink)
    sut, _ = await start_budgeted(fakellm, parts={"tracer": t})
    agent = Agent()
    try:
        await post(
            sut,
            {"messages": [{"role": "user", "content": "hi"}], "stream": True},
            {**agent.headers, "X-Holdfast-Session": "s-dropped"},
        )
        sent = [r["headers"] for r in await provider_requests(sut)]
        await flush(t)
    finally:
        await sut.server.close()
        await t.close()
    assert sink.spans == []
    version, trace_id, _parent, flags = sent[-1]["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", agent.trace_id, "00")
