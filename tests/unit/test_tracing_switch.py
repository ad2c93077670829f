"""Tracing's switch: which settings turn it on, and that off costs no import of OpenTelemetry
(checked in a fresh interpreter that serves a request through the whole app, as a sidecar
process would). Span attributes themselves are checked against a real collector in
tests/servers/test_tracing.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from holdfast.dialects import Answer, EventView, ToolCall, Usage
from sidecar.pipeline.chain import ORDER
from sidecar.settings import SettingsError, SidecarSettings
from sidecar.settings.cli import load_settings
from sidecar.tracing.attributes import AnswerFacts, server_of, span_name

ARGV = ["--agent", "support"]


def endpoint(argv: list[str], environ: dict[str, str]) -> str:
    return load_settings(ARGV + argv, environ).otlp_endpoint


def test_the_endpoint_comes_from_the_flag_or_the_sdks_variables() -> None:
    assert endpoint([], {}) == ""
    url = "http://127.0.0.1:4318/v1/traces"
    assert endpoint(["--otlp-endpoint", url], {}) == url
    assert endpoint([], {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url}) == url
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}
    assert endpoint([], base) == "http://collector:4318/v1/traces"
    # the SDK's own off switches are honoured for the variables, not over an explicit flag
    assert endpoint([], {**base, "OTEL_SDK_DISABLED": "true"}) == ""
    assert endpoint([], {**base, "OTEL_TRACES_EXPORTER": "none"}) == ""
    assert endpoint(["--otlp-endpoint", url], {"OTEL_SDK_DISABLED": "true"}) == url
    for bad in ("collector:4318", "ftp://x/v1/traces", "http:///v1/traces"):
        with pytest.raises(SettingsError, match="otlp-endpoint"):
            SidecarSettings(agent="support", otlp_endpoint=bad)


def test_tracing_opens_the_chain() -> None:
    assert ORDER[0] == "tracing"


def test_span_names_and_servers() -> None:
    assert span_name("chat", "gpt-4o-mini") == "chat gpt-4o-mini"
    assert span_name("execute_tool", "") == "execute_tool"
    assert server_of("https://api.openai.com/v1") == {
        "server.address": "api.openai.com",
        "server.port": 443,
    }
    assert server_of("http://127.0.0.1:9900/v1")["server.port"] == 9900
    assert server_of("not a url") == {}


def test_answer_facts_from_whole_and_streamed_answers() -> None:
    whole = AnswerFacts()
    call = ToolCall(0, 0, "lookup", "{}")
    whole.answer(
        Answer(
            "",
            (call,),
            Usage(7, 3),
            False,
            3,
            1,
            finish_reasons=("tool_calls",),
            response_model="m-1",
            response_id="id-1",
        )
    )
    assert whole.attributes() == {
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.response.finish_reasons": ["tool_calls"],
        "gen_ai.response.model": "m-1",
        "gen_ai.response.id": "id-1",
        "holdfast.tool_calls": ["lookup"],
    }
    streamed = AnswerFacts()
    streamed.event(EventView(response_model="m-2", response_id="id-2"))
    streamed.event(EventView(text="hi"))
    streamed.event(EventView(finish_reasons=("stop",)))
    streamed.event(EventView(usage=Usage(5, 2), usage_only=True))
    assert streamed.attributes() == {
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.response.model": "m-2",
        "gen_ai.response.id": "id-2",
    }
    assert AnswerFacts().attributes() == {}  # nothing said: nothing invented


PROBE = """
import asyncio, json, sys
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

async def main():
    upstream = web.Application()
    async def chat(request):
        return web.json_response({"choices": [{"message": {"content": "hi"}}]})
    upstream.router.add_post("/v1/chat/completions", chat)
    provider = TestServer(upstream, host="127.0.0.1")
    await provider.start_server()
    from sidecar.settings import SidecarSettings
    from sidecar.app import Sidecar
    from holdfast.keyspace import Release, Route
    from holdfast.store import KeyValue
    settings = SidecarSettings(agent="a", etcd_endpoints=("http://127.0.0.1:1",))
    sidecar = Sidecar(settings, {})
    assert sidecar.tracer is None
    ks = sidecar.keyspace
    kvs = {}
    for key, value in (
        (ks.release("a", "r1"), Release(agent="a", name="r1", model="m",
                                        base_url=str(provider.make_url("/v1"))).encode()),
        (ks.route("a"), Route(agent="a", stable="r1").encode()),
    ):
        kvs[key] = KeyValue(key, value, 5, 1, 1)
    sidecar.config.apply_reset(5, kvs, "etcd")
    await sidecar.upstream.start()
    client = TestClient(TestServer(sidecar.build_app(), host="127.0.0.1"))
    await client.start_server()
    resp = await client.post("/v1/chat/completions", json={"model": "a", "messages": [
                                 {"role": "user", "content": "hi"}]},
                             headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    status = resp.status
    await client.close()
    await sidecar.upstream.close()
    await provider.close()
    loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry", "sidecar.tracing.o")))
    print(json.dumps({"status": status, "loaded": loaded}))

asyncio.run(main())
"""


def test_off_imports_no_opentelemetry_while_serving() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"status": 200, "loaded": []}


def test_on_without_the_sdk_says_what_to_install() -> None:
    probe = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"  # as if holdfast[otel] were not installed
        "from sidecar.settings import SidecarSettings\n"
        "from sidecar.tracing import TracingUnavailable, open_tracer\n"
        "s = SidecarSettings(agent='a', otlp_endpoint='http://127.0.0.1:4318/v1/traces')\n"
        "try:\n"
        "    open_tracer(s, {})\n"
        "except TracingUnavailable as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'holdfast[otel]'" in done.stdout
