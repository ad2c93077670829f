"""The sidecar's OpenAI surface against the fake upstream, with the real openai SDK as client."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionUserMessageParam

from holdfast_devtools import procs
from tests.servers.conftest import PROVIDER_KEY, SidecarUnderTest, start_sidecar

USER: ChatCompletionUserMessageParam = {"role": "user", "content": "hello there"}


def client(sut: SidecarUnderTest) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{sut.url}/v1", api_key="agent-own-key", max_retries=0)


async def test_chat_is_routed_to_stable_release_and_stamped(sidecar: SidecarUnderTest) -> None:
    raw = await client(sidecar).chat.completions.with_raw_response.create(
        model="support", messages=[USER]
    )
    completion = raw.parse()
    assert raw.headers["x-holdfast-release"] == "r1"
    assert raw.headers["x-holdfast-config-revision"] == str(sidecar.revision)
    assert completion.model == "model-one"
    assert "model-one" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.completion_tokens > 0


async def test_alias_resolves_like_the_agent_name(sidecar: SidecarUnderTest) -> None:
    completion = await client(sidecar).chat.completions.create(model="helper", messages=[USER])
    assert completion.model == "model-one"


async def test_streaming_is_relayed_chunk_by_chunk(sidecar: SidecarUnderTest) -> None:
    raw = await client(sidecar).chat.completions.with_raw_response.create(
        model="support", messages=[USER], stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-holdfast-release"] == "r1"
    chunks = [chunk async for chunk in raw.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "model-one" in text
    assert len(chunks) > 3
    assert chunks[-1].usage is not None


async def test_pointer_change_applies_on_next_request(sidecar: SidecarUnderTest) -> None:
    c = client(sidecar)
    first = await c.chat.completions.with_raw_response.create(model="support", messages=[USER])
    sidecar.set_stable("r2")
    second = await c.chat.completions.with_raw_response.create(model="support", messages=[USER])
    assert first.headers["x-holdfast-release"] == "r1"
    assert second.headers["x-holdfast-release"] == "r2"
    assert second.parse().model == "model-two"
    assert int(second.headers["x-holdfast-config-revision"]) > int(
        first.headers["x-holdfast-config-revision"]
    )


async def test_provider_key_comes_from_release_env_never_from_agent(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await client(sidecar).chat.completions.create(model="support", messages=[USER])
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fakellm.url}/_control/requests?limit=1") as resp:
            seen = await resp.json()
    text = json.dumps(seen)
    assert f"Bearer {PROVIDER_KEY}" in text
    assert "agent-own-key" not in text
    # bodies are relayed byte for byte, so the provider must not compress them
    assert seen["requests"][0]["headers"]["accept-encoding"] == "identity"


async def test_missing_provider_key_is_a_clear_503(sidecar: SidecarUnderTest) -> None:
    sidecar.add_release("r3", "model-three", key_var="NOT_SET_ANYWHERE")
    sidecar.set_stable("r3")
    with pytest.raises(openai.APIStatusError) as info:
        await client(sidecar).chat.completions.create(model="support", messages=[USER])
    assert info.value.status_code == 503
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "provider_key_missing"
    assert "NOT_SET_ANYWHERE" in body["message"]


async def test_embeddings_and_models(sidecar: SidecarUnderTest) -> None:
    c = client(sidecar)
    # embeddings go to the release's embedding model (r1 names none, so it refuses them)
    sidecar.add_release("r3", "model-three", embedding_model="text-embedding-3-small")
    sidecar.set_stable("r3", aliases=("helper",))
    emb = await c.embeddings.create(model="support", input=["a", "b"])
    assert len(emb.data) == 2
    models = await c.models.list()
    assert [m.id for m in models.data] == ["support", "helper"]


async def post_raw(url: str, data: bytes, **headers: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=data, headers=headers) as resp:
            return resp.status, await resp.json()


async def fake_request_count(fakellm: procs.ManagedProcess) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fakellm.url}/_control/requests?limit=1000") as resp:
            body = await resp.json()
    rows = body["requests"] if isinstance(body, dict) else body
    return len(rows)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_request"),
        (b"[1, 2]", 400, "invalid_request"),
        (b'{"messages": []}', 400, "invalid_request"),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}',
            404,
            "model_not_found",
        ),
        # validation at the door: what the API requires, refused before anything is forwarded
        (b'{"model": "support"}', 400, "invalid_request"),
        (b'{"model": "support", "messages": "x"}', 400, "invalid_request"),
        (b'{"model": "support", "messages": []}', 400, "invalid_request"),
        (b'{"model": "support", "messages": ["x"]}', 400, "invalid_request"),
    ],
)
async def test_bad_requests_are_refused_and_nothing_is_forwarded(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess, body: bytes, status: int, code: str
) -> None:
    before = await fake_request_count(fakellm)
    got, payload = await post_raw(
        f"{sidecar.url}/v1/chat/completions", body, **{"Content-Type": "application/json"}
    )
    assert got == status
    error = payload["error"]
    assert isinstance(error, dict) and error["code"] == code
    assert set(error) == {"message", "type", "code", "param"}
    assert await fake_request_count(fakellm) == before


async def test_unknown_model_error_lists_the_known_names(sidecar: SidecarUnderTest) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client(sidecar).chat.completions.create(model="gpt-4o", messages=[USER])
    assert "support, helper" in str(info.value)


async def test_oversized_body_is_413(sidecar: SidecarUnderTest) -> None:
    big = json.dumps({"model": "support", "messages": [{"role": "user", "content": "x" * 70_000}]})
    status, payload = await post_raw(f"{sidecar.url}/v1/chat/completions", big.encode())
    assert status == 413
    assert payload["error"]["code"] == "request_too_large"  # type: ignore[index]


async def test_unreachable_upstream_is_502(sidecar: SidecarUnderTest) -> None:
    port = procs_free_port()
    sidecar.add_release("dead", "m", base_url=f"http://127.0.0.1:{port}/v1")
    sidecar.set_stable("dead")
    with pytest.raises(openai.APIStatusError) as info:
        await client(sidecar).chat.completions.create(model="support", messages=[USER])
    assert info.value.status_code == 502
    assert info.value.response.headers["x-holdfast-release"] == "dead"


def procs_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_not_configured_is_503(fakellm: procs.ManagedProcess) -> None:
    sut = await start_sidecar(fakellm.url)
    try:
        with pytest.raises(openai.APIStatusError) as info:
            await client(sut).chat.completions.create(model="support", messages=[USER])
        assert info.value.status_code == 503
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{sut.url}/readyz") as resp:
                assert resp.status == 503
            async with http.get(f"{sut.url}/healthz") as resp:
                assert resp.status == 200
    finally:
        await sut.server.close()


async def test_unknown_path_and_method_use_openai_error_shape(sidecar: SidecarUnderTest) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/v1/nothing") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "unknown_url"
        async with http.get(f"{sidecar.url}/v1/chat/completions") as resp:
            assert resp.status == 405
            assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_ops_endpoints(sidecar: SidecarUnderTest) -> None:
    await client(sidecar).chat.completions.create(model="support", messages=[USER])
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/readyz") as resp:
            ready = await resp.json()
        async with http.get(f"{sidecar.url}/status") as resp:
            status = await resp.json()
        async with http.get(f"{sidecar.url}/metrics") as resp:
            metrics = await resp.text()
    assert ready["ready"] is True
    assert status["route"]["stable"] == "r1"
    assert status["config"]["revision"] == sidecar.revision
    assert status["requests"]["total"] >= 1
    assert status["process"]["rss_bytes"] > 0
    assert {r["release"] for r in status["releases"]} == {"r1", "r2"}
    assert 'gen_ai_client_operation_duration_seconds_count{agent="support"' in metrics
    assert (
        'holdfast_requests_total{agent="support",endpoint="chat",outcome="ok",release="r1"}'
        in metrics
    )
    assert PROVIDER_KEY not in json.dumps(status) + metrics


async def test_stale_control_plane_stays_ready_but_says_so(sidecar: SidecarUnderTest) -> None:
    sidecar.control.connected = False
    sidecar.control.last_contact = -1_000_000.0
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["stale"] is True
        async with http.get(f"{sidecar.url}/status") as resp:
            assert (await resp.json())["config"]["stale"] is True
