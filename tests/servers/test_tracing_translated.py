"""Spans and metrics of requests served through a translation (holdfast.translate). Spans, by
the real OTLP/HTTP exporter: the span names the provider actually called (the release's kind,
not the agent's API), says which translation it went through, and reads the provider's own
usage, finish reasons, model and id -- streamed and whole, both directions; a refused
translation is an error span; the provider receives the span's context as on the passthrough
path, and an Anthropic passthrough span beside them shows the same facts untranslated. Metrics:
requests, outcomes, usage and time to first token counted under the release, as for any."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from holdfast.keyspace.budget import Budget
from holdfast_devtools import procs
from holdfast_devtools.otlp_sink import CLIENT, STATUS_ERROR, CollectedSpan, OtlpSink
from sidecar.tracing.otel import OtelTracer
from tests.servers.conftest import AGENT, KS, SidecarUnderTest, start_sidecar
from tests.servers.test_budget_filter import start_budgeted
from tests.servers.test_tracing import Agent, flush, new_tracer, one, parent_of, sink

__all__ = ["sink"]  # the OTLP sink fixture, shared with test_tracing

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
ANTHROPIC_TOOLS = [{"name": "lookup", "input_schema": {"type": "object"}}]
ASK_TOOL = "call:lookup for Lyon"  # the fake upstream answers with a call of the tool named


@pytest.fixture
async def traced(
    fakellm: procs.ManagedProcess, sink: OtlpSink
) -> AsyncIterator[tuple[SidecarUnderTest, OtelTracer]]:
    t = new_tracer(sink)
    sut = await start_sidecar(fakellm.url, parts={"tracer": t})
    sut.add_release("a1", "claude-one", provider="anthropic")
    sut.add_release("o1", "model-one")
    yield sut, t
    await sut.server.close()
    await t.close()


async def post(
    sut: SidecarUnderTest,
    path: str,
    body: dict[str, Any],
    agent: Agent,
    session: str,
    status: int = 200,
) -> dict[str, str]:
    headers = {**agent.headers, "X-Holdfast-Session": session, "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sut.url}{path}", json={"model": AGENT, **body}, headers=headers
        ) as resp:
            text = await resp.text()
            assert resp.status == status, text
            return dict(resp.headers) | {"body": text}


async def metrics(sut: SidecarUnderTest) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The sidecar's /metrics samples, by name and labels, read by prometheus_client's parser."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sut.url}/metrics") as resp:
            text = await resp.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset({"agent": AGENT, **labels}.items())


async def provider_traceparents(sut: SidecarUnderTest) -> list[str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sut.fake_url}/_control/requests?limit=200") as resp:
            rows = (await resp.json())["requests"]
    return [tp for r in rows if (tp := r["headers"].get("traceparent"))]


def provider_facts(span: CollectedSpan, provider: str, model: str) -> dict[str, Any]:
    attrs = span.attributes
    assert span.kind == CLIENT and span.status_code != STATUS_ERROR
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == provider
    assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == model
    assert attrs["gen_ai.response.id"]
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["http.response.status_code"] == 200 and "holdfast.outcome" not in attrs
    return dict(attrs)


async def test_translated_spans_name_the_provider_called_and_its_own_answer(
    traced: tuple[SidecarUnderTest, OtelTracer], sink: OtlpSink
) -> None:
    sut, t = traced
    chat = "/v1/chat/completions"
    hello = [{"role": "user", "content": "hello there"}]
    asking = [{"role": "user", "content": ASK_TOOL}]
    agents = {name: Agent() for name in ("stream", "tool", "claude", "native", "refused")}

    sut.set_stable("a1")  # an OpenAI-API agent served by an Anthropic release
    served = await post(
        sut,
        chat,
        {"messages": hello, "stream": True, "stream_options": {"include_usage": True}},
        agents["stream"],
        "s-stream",
    )
    assert served["X-Holdfast-Translated"] == "openai.chat->anthropic.messages"
    await post(sut, chat, {"messages": asking, "tools": TOOLS}, agents["tool"], "s-tool")
    # two choices cannot be carried into Messages: refused before anything is sent
    refused = await post(sut, chat, {"messages": hello, "n": 2}, agents["refused"], "s-refused",
                         status=400)  # fmt: skip
    assert "untranslatable" in refused["body"]
    # the same Anthropic release, reached natively by an Anthropic-API agent
    native = {"messages": hello, "max_tokens": 64, "stream": True}
    await post(sut, "/v1/messages", native, agents["native"], "s-native")
    sut.set_stable("o1")  # an Anthropic-API agent served by an OpenAI release
    claude = {"messages": asking, "max_tokens": 64, "tools": ANTHROPIC_TOOLS}
    served = await post(sut, "/v1/messages", claude, agents["claude"], "s-claude")
    assert served["X-Holdfast-Translated"] == "anthropic.messages->openai.chat"

    await flush(t)
    spans = await sink.wait_for(lambda s: s.name.startswith("chat "), count=5)

    stream = provider_facts(one(spans, "s-stream"), "anthropic", "claude-one")
    assert stream["holdfast.translation"] == "openai.chat->anthropic.messages"
    assert stream["gen_ai.response.finish_reasons"] == ["end_turn"]  # as Anthropic said it
    assert stream["holdfast.time_to_first_chunk_s"] > 0

    tool = provider_facts(one(spans, "s-tool"), "anthropic", "claude-one")
    assert tool["holdfast.translation"] == "openai.chat->anthropic.messages"
    assert tool["gen_ai.response.finish_reasons"] == ["tool_use"]
    assert tool["holdfast.tool_calls"] == ["lookup"]

    native_span = one(spans, "s-native")
    attrs = provider_facts(native_span, "anthropic", "claude-one")
    assert "holdfast.translation" not in attrs
    assert attrs["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert native_span.name == one(spans, "s-stream").name == "chat claude-one"

    claude_span = one(spans, "s-claude")
    attrs = provider_facts(claude_span, "openai", "model-one")
    assert attrs["holdfast.translation"] == "anthropic.messages->openai.chat"
    assert attrs["gen_ai.response.finish_reasons"] == ["tool_calls"]  # as OpenAI said it
    assert attrs["holdfast.tool_calls"] == ["lookup"]
    assert claude_span.name == "chat model-one"

    failed = one(spans, "s-refused")
    assert failed.status_code == STATUS_ERROR
    assert failed.attributes["error.type"] == "untranslatable"
    assert failed.attributes["holdfast.translation"] == "openai.chat->anthropic.messages"
    assert failed.attributes["gen_ai.provider.name"] == "anthropic"

    # Metrics count a translated request under its release, as any request: outcomes, usage,
    # the time to a stream's first token.
    m = await metrics(sut)
    for outcome, release, count in (("ok", "a1", 3), ("untranslatable", "a1", 1), ("ok", "o1", 1)):
        key = sample("holdfast_requests_total", endpoint="chat", outcome=outcome, release=release)
        assert m[key] == count, key
    # ... and through which translation, apart: the passthrough request is not among them
    translated = "holdfast_translated_requests_total"
    for pair, outcome, release, count in (
        ("openai.chat->anthropic.messages", "ok", "a1", 2),
        ("openai.chat->anthropic.messages", "untranslatable", "a1", 1),
        ("anthropic.messages->openai.chat", "ok", "o1", 1),
    ):
        key = sample(translated, translation=pair, outcome=outcome, release=release)
        assert m[key] == count, key
    assert sum(v for (name, _), v in m.items() if name == translated) == 4
    ttft = "gen_ai_server_time_to_first_token_seconds_count"
    assert m[sample(ttft, holdfast_category="default", holdfast_release="a1")] == 2
    for kind in ("input", "output"):
        for name in ("a1", "o1"):
            key = sample("gen_ai_client_token_usage_sum", holdfast_category="default",
                         holdfast_release=name, gen_ai_token_type=kind)  # fmt: skip
            assert m[key] > 0, key

    # Translated or not, the provider was called as a child of the sidecar's span.
    ours = {a.trace_id for a in agents.values()}  # the fake upstream is shared by other tests
    sent = [parent_of(tp) for tp in await provider_traceparents(sut) if tp.split("-")[1] in ours]
    for name, session in (("stream", "s-stream"), ("tool", "s-tool"), ("claude", "s-claude")):
        span = one(spans, session)
        assert sent.count((agents[name].trace_id, span.span_id)) == 1, name
        assert (span.trace_id, span.parent_span_id) == (
            agents[name].trace_id,
            agents[name].span_id,
        )


async def test_a_degrade_to_a_release_of_another_kind_renames_the_provider_and_translation(
    fakellm: procs.ManagedProcess, sink: OtlpSink
) -> None:
    t = new_tracer(sink)
    sut, _ = await start_budgeted(fakellm, parts={"tracer": t})
    try:
        sut.add_release("a1", "claude-one", provider="anthropic")
        sut.set_stable("a1")  # the Anthropic-API agent's own kind; r2 is an OpenAI release
        budget = Budget(scope="session:s-degraded", tokens=1, window="1h", action="degrade",
                        degrade_to="r2")  # fmt: skip
        sut._put(KS.budget(budget.scope), budget.encode())
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
        served = await post(sut, "/v1/messages", body, Agent(), "s-degraded")
        assert served["X-Holdfast-Release"] == "r2"
        assert served["X-Holdfast-Translated"] == "anthropic.messages->openai.chat"
        await flush(t)
        span = one(await sink.wait_for(lambda s: s.name == "chat model-two"), "s-degraded")
    finally:
        await sut.server.close()
        await t.close()
    attrs = provider_facts(span, "openai", "model-two")
    assert attrs["holdfast.release"] == "r2" and attrs["holdfast.budget.degraded_from"] == "a1"
    assert attrs["holdfast.budget.admission"] == "degraded"
    assert attrs["holdfast.translation"] == "anthropic.messages->openai.chat"
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
