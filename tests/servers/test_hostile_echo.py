"""A provider that answers malformed HTTP quoting the request's Authorization header back: the
agent gets a clean 502 and nothing -- answer, log event or traceback -- carries the key; and a
provider that echoes the key in well-formed answers: configsvc's probe and prompt evaluation
mask it in what they report and store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from configsvc.errors import EvalFailed, ProbeFailed
from configsvc.prompts.cases import parse_cases
from configsvc.prompts.eval import Evaluator
from configsvc.releases.probe import Prober
from holdfast.keyspace import Release
from holdfast.keyspace.prompt import PromptVersion
from holdfast_devtools import procs
from tests.servers.conftest import AGENT, PROVIDER_KEY, start_sidecar
from tests.servers.hostile_echo import echo_provider


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_answer_quoting_the_key_is_a_clean_502(
    fakellm: procs.ManagedProcess, stream: bool
) -> None:
    sut = await start_sidecar(fakellm.url)
    try:
        async with echo_provider() as url:
            sut.add_release("echo", "m-echo", base_url=url)
            sut.set_stable("echo")
            body = {"model": AGENT, "messages": [{"role": "user", "content": "hi"}]}
            with capture_logs() as logs:
                async with aiohttp.ClientSession() as http:
                    async with http.post(
                        f"{sut.url}/v1/chat/completions", json=body | {"stream": stream}
                    ) as resp:
                        status, raw = resp.status, await resp.read()
                        headers = str(dict(resp.headers))
    finally:
        await sut.server.close()
    assert status == 502, raw
    err = json.loads(raw)["error"]
    assert err["code"] == "upstream_unreachable" and "malformed HTTP" in err["message"]
    assert any(e["event"] == "request_refused" for e in logs), logs  # the logs were captured
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")], logs
    everything = raw.decode() + headers + repr(logs)
    assert PROVIDER_KEY not in everything


async def test_configsvc_probe_never_quotes_the_echoed_key() -> None:
    prober = Prober(timeout=5.0, prompt="ping", environ={"PROBE_KEY": PROVIDER_KEY})
    await prober.start()
    try:
        async with echo_provider() as url:
            release = Release(
                agent=AGENT, name="echo", model="m", base_url=url, api_key_env="PROBE_KEY"
            )
            with capture_logs() as logs, pytest.raises(ProbeFailed) as failed:
                await prober.probe(release)
    finally:
        await prober.close()
    assert PROVIDER_KEY not in failed.value.message + repr(logs)


@asynccontextmanager
async def key_echoing_provider(status: int) -> AsyncIterator[str]:
    """Well-formed HTTP that quotes the caller's key: in a 200 completion or an error message."""

    async def chat(request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "")
        if status != 200:
            return web.json_response({"error": {"message": f"bad key {key}"}}, status=status)
        message = {"role": "assistant", "content": f"you sent {key}"}
        return web.json_response({"choices": [{"index": 0, "message": message}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("status", [200, 401])
async def test_probe_and_eval_mask_a_key_the_provider_echoes(status: int) -> None:
    environ = {"PROBE_KEY": PROVIDER_KEY}
    prober = Prober(timeout=5.0, prompt="ping", environ=environ)
    evaluator = Evaluator(environ=environ)
    await prober.start()
    await evaluator.start()
    try:
        async with key_echoing_provider(status) as url:
            release = Release(
                agent=AGENT, name="echo", model="m", base_url=url, api_key_env="PROBE_KEY"
            )
            prompt = PromptVersion(
                name="p", version="1", text="be brief", author="t", created_at=1.0
            )
            cases = parse_cases(
                [{"id": f"c{i}", "input": "hi", "expect": {"contains": ["x"]}} for i in range(5)]
            )
            with capture_logs() as logs:
                if status == 200:
                    evaluation = await evaluator.run(prompt, cases, release, actor="t", now=1.0)
                    await prober.probe(release)
                    said = json.dumps(evaluation.to_map())  # stored in etcd
                else:
                    with pytest.raises(EvalFailed) as eval_failed:
                        await evaluator.run(prompt, cases, release, actor="t", now=1.0)
                    with pytest.raises(ProbeFailed) as probe_failed:
                        await prober.probe(release)
                    said = eval_failed.value.message + probe_failed.value.message
    finally:
        await prober.close()
        await evaluator.close()
    assert "[redacted]" in said  # the echo reached the result or the error, masked
    assert PROVIDER_KEY not in said + repr(logs)
