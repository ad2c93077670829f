"""Tier 2: prompt substitution per session and experiment feedback, through the real app."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from holdfast.keyspace import Pin, Release, Route
from holdfast.keyspace.experiment import RouteExperiment, Variant
from holdfast.keyspace.prompt import PromptVersion
from sidecar.experiments.feedback import FEEDBACK_PATH, ExperimentBook
from sidecar.prompts.filter import MAX_VARS_HEADER
from sidecar.settings.limits import LimitSettings
from tests.servers.conftest import AGENT, KEY_VAR, KS, SidecarUnderTest, start_sidecar

Json = dict[str, Any]
V1 = "You are a careful support agent for {{shop}}."
V2 = "You are a cheerful support agent for {{shop}}. Escalate refunds."


def put_prompt(sut: SidecarUnderTest, version: str, text: str, status: str) -> None:
    prompt = PromptVersion(name="support", version=version, text=text, status=status)  # type: ignore[arg-type]
    sut._put(KS.prompt("support", version), prompt.encode())


def put_release(sut: SidecarUnderTest, name: str, prompts: dict[str, str]) -> None:
    release = Release(
        agent=AGENT,
        name=name,
        model="model-one",
        base_url=f"{sut.fake_url}/v1",
        api_key_env=KEY_VAR,
        prompts=prompts,
    )
    sut._put(KS.release(AGENT, name), release.encode())


async def chat(
    sut: SidecarUnderTest, messages: list[Json], *, session: str | None, **extra: Any
) -> tuple[int, dict[str, str], Json, Json | None]:
    headers = {"X-Holdfast-Session": session} if session else {}
    headers |= extra.pop("headers", {})
    body: Json = {"model": AGENT, "messages": messages, **extra}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sut.url}/v1/chat/completions", json=body, headers=headers) as r:
            status, got, answer = r.status, dict(r.headers), await r.json()
        async with http.get(f"{sut.fake_url}/_control/requests?limit=1") as r:
            seen = (await r.json())["requests"]
    return status, got, answer, (seen[-1]["body"] if seen and status == 200 else None)


REF = [{"role": "system", "content": "@prompt:support"}, {"role": "user", "content": "hi"}]
VARS = {"shop": "Acme"}


async def test_sessions_keep_their_version_when_another_is_activated(
    sidecar: SidecarUnderTest,
) -> None:
    put_prompt(sidecar, "1", V1, "active")
    put_prompt(sidecar, "2", V2, "draft")
    put_release(sidecar, "p1", {"support": "active"})
    sidecar.set_stable("p1")

    status, headers, _, sent = await chat(sidecar, REF, session="old", holdfast_prompt_vars=VARS)
    assert status == 200 and headers["X-Holdfast-Prompt-Version"] == "support@1"
    assert sent is not None and sent["messages"][0]["content"] == V1.replace("{{shop}}", "Acme")
    assert "holdfast_prompt_vars" not in sent
    entry = sidecar.pins.get("old")
    assert entry is not None and entry.pin.prompts == {"support": "1"}

    # v2 becomes active mid-conversation (one etcd transaction in configsvc: both records)
    put_prompt(sidecar, "1", V1, "deprecated")
    put_prompt(sidecar, "2", V2, "active")

    _, headers, _, sent = await chat(sidecar, REF, session="old", holdfast_prompt_vars=VARS)
    assert headers["X-Holdfast-Prompt-Version"] == "support@1"  # the old session keeps v1
    assert sent is not None and "careful" in sent["messages"][0]["content"]
    _, headers, _, sent = await chat(
        sidecar,
        [{"role": "user", "content": "hi"}],
        session="new",
        headers={"X-Holdfast-Prompt": "support", "X-Holdfast-Prompt-Vars": '{"shop": "Bolt"}'},
    )
    assert headers["X-Holdfast-Prompt-Version"] == "support@2"
    assert sent is not None and sent["messages"][0] == {
        "role": "system",
        "content": V2.replace("{{shop}}", "Bolt"),
    }
    # rollback: v1 active again -> new sessions get v1, the session started on v2 keeps v2
    put_prompt(sidecar, "2", V2, "deprecated")
    put_prompt(sidecar, "1", V1, "active")
    _, headers, _, _ = await chat(
        sidecar, REF, session="new", holdfast_prompt_vars={"shop": "Bolt"}
    )
    assert headers["X-Holdfast-Prompt-Version"] == "support@2"
    _, headers, _, _ = await chat(sidecar, REF, session="newer", holdfast_prompt_vars=VARS)
    assert headers["X-Holdfast-Prompt-Version"] == "support@1"


async def test_bad_references_are_clear_errors_and_literal_prompts_untouched(
    sidecar: SidecarUnderTest,
) -> None:
    put_prompt(sidecar, "1", V1, "active")
    put_release(sidecar, "p1", {"support": "1"})
    put_release(sidecar, "p9", {"support": "9"})
    sidecar.set_stable("p1")

    literal = [{"role": "system", "content": "I am @prompt:support literal"}, REF[1]]
    status, headers, _, sent = await chat(sidecar, literal, session="lit")
    assert status == 200 and "X-Holdfast-Prompt-Version" not in headers
    assert sent is not None and sent["messages"] == literal

    cases = [
        ({"holdfast_prompt_vars": {"shop": "A", "tone": "x"}}, 400, "prompt_variables", "tone"),
        ({}, 400, "prompt_variables", "needs variable(s): shop"),
        ({"holdfast_prompt_vars": ["x"]}, 400, "prompt_variables", "JSON object"),
        (
            {"holdfast_prompt_vars": VARS, "headers": {"X-Holdfast-Prompt-Vars": "{}"}},
            400,
            "prompt_variables",
            "not both",
        ),
        ({"headers": {"X-Holdfast-Prompt-Vars": "{nope"}}, 400, "prompt_variables", "not JSON"),
    ]
    for extra, want_status, code, words in cases:
        assert isinstance(extra, dict)
        status, _, answer, _ = await chat(sidecar, REF, session="s-bad", **extra)
        assert status == want_status, answer
        assert answer["error"]["code"] == code and words in answer["error"]["message"]

    other = [{"role": "system", "content": "@prompt:billing"}, REF[1]]
    status, _, answer, _ = await chat(sidecar, other, session="s-bad")
    assert status == 400 and answer["error"]["code"] == "prompt_not_in_release"

    sidecar.set_stable("p9")  # the release names support@9, which this sidecar never received
    status, _, answer, _ = await chat(sidecar, REF, session="s9", holdfast_prompt_vars=VARS)
    assert status == 503 and answer["error"]["code"] == "prompt_unavailable"
    assert "support@9" in answer["error"]["message"]


def _book(sut: SidecarUnderTest) -> ExperimentBook:
    for route in sut.server.app.router.routes():
        if route.resource is not None and route.resource.canonical == FEEDBACK_PATH:
            owner = getattr(route.handler, "__self__", None)
            book = getattr(owner, "book", None)
            assert isinstance(book, ExperimentBook)
            return book
    raise AssertionError("no feedback route")


async def test_feedback_is_counted_per_variant(sidecar: SidecarUnderTest) -> None:
    experiment = RouteExperiment(
        name="tone",
        metric="resolved",
        metric_type="rate",
        variants=(Variant("a", "r1", 50.0), Variant("b", "r2", 50.0)),
        started_at=1.0,
    )
    sidecar._put(KS.route(AGENT), Route(agent=AGENT, stable="r1", experiment=experiment).encode())
    releases = {}
    for i in range(20):
        _, headers, _, _ = await chat(sidecar, [REF[1]], session=f"x{i}")
        releases[f"x{i}"] = headers["X-Holdfast-Release"]
    assert set(releases.values()) == {"r1", "r2"}
    # a session pinned before the experiment is not in it
    old = Pin(agent=AGENT, session="before", release="r1", pinned_at=1, revision=1)
    sidecar.pins.record_new(old)

    async def feedback(body: Json) -> tuple[int, Json]:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{sidecar.url}{FEEDBACK_PATH}", json=body) as r:
                return r.status, await r.json()

    for session in releases:
        status, answer = await feedback({"session": session, "metric": "resolved", "value": 1})
        assert status == 202 and answer["variant"] in ("a", "b")
    assert (await feedback({"session": "before", "metric": "resolved", "value": 1}))[0] == 404
    assert (await feedback({"session": "nobody", "metric": "resolved", "value": 1}))[0] == 404
    status, answer = await feedback({"session": "x0", "metric": "csat", "value": 1})
    assert status == 400 and answer["error"]["param"] == "metric"
    assert (await feedback({"session": "x0", "metric": "resolved", "value": 2}))[0] == 400
    assert (await feedback({"session": "x0", "metric": "resolved"}))[0] == 400
    assert (await feedback({"session": "x0", "metric": "resolved", "value": 1, "x": 1}))[0] == 400
    counts = {o.variant: o.n for o in _book(sidecar).outcomes()}
    by_variant = {"a": 0, "b": 0}
    for release in releases.values():
        by_variant["a" if release == "r1" else "b"] += 1
    assert counts == by_variant


async def test_feedback_is_one_outcome_per_session_and_bounded(sidecar: SidecarUnderTest) -> None:
    experiment = RouteExperiment(
        name="csat",
        metric="score",
        metric_type="mean",
        variants=(Variant("a", "r1", 50.0), Variant("b", "r2", 50.0)),
        started_at=1.0,
    )
    sidecar._put(KS.route(AGENT), Route(agent=AGENT, stable="r1", experiment=experiment).encode())
    for session in ("y1", "y2"):
        status, _, _, _ = await chat(sidecar, [REF[1]], session=session)
        assert status == 200

    async def post(data: bytes, headers: dict[str, str] | None = None) -> tuple[int, Json]:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{sidecar.url}{FEEDBACK_PATH}", data=data, headers=hdrs) as r:
                return r.status, await r.json()

    def body(session: str, value: float) -> bytes:
        return json.dumps({"session": session, "metric": "score", "value": value}).encode()

    first = await post(body("y1", 3.0))
    retried = await post(body("y1", 3.0))  # the agent retried: the same outcome, once
    corrected = await post(body("y1", 5.0))  # a corrected value replaces the earlier one
    assert first == (202, {**first[1], "recorded": True, "replaced": False})
    assert retried[1]["replaced"] and corrected[1]["replaced"]
    assert (await post(body("y2", 9.0)))[0] == 202
    totals = {(o.variant, o.n, o.total) for o in _book(sidecar).outcomes()}
    n = sum(o.n for o in _book(sidecar).outcomes())
    assert n == 2 and sum(t for _, _, t in totals) == 14.0

    # the body limit: 4 KiB, refused whole (413, OpenAI shape) with or without a length header
    padded = json.dumps({"session": "y2", "metric": "score", "value": 1, "x": "p" * 5000})
    status, answer = await post(padded.encode())
    assert status == 413 and answer["error"]["code"] == "request_too_large"

    async def chunks() -> Any:
        yield padded.encode()[:3000]
        yield padded.encode()[3000:]

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sidecar.url}{FEEDBACK_PATH}", data=chunks()) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "request_too_large"
    assert sum(o.n for o in _book(sidecar).outcomes()) == 2  # nothing half-counted


async def test_prompt_vars_header_limit(fakellm: Any) -> None:
    # the server's own header limit (8 KiB by default) would answer first: raise it past 16 KiB
    sut = await start_sidecar(fakellm.url, limits=LimitSettings(max_header_bytes=40_000))
    try:
        sut.add_release("r1", "model-one")
        put_prompt(sut, "1", V1, "active")
        put_release(sut, "p1", {"support": "active"})
        sut.set_stable("p1")
        fits = json.dumps({"shop": "A" * (MAX_VARS_HEADER - 20)})
        status, headers, _, sent = await chat(
            sut, REF, session="h1", headers={"X-Holdfast-Prompt-Vars": fits}
        )
        assert status == 200 and headers["X-Holdfast-Prompt-Version"] == "support@1"
        assert sent is not None and "A" * 100 in sent["messages"][0]["content"]
        over = json.dumps({"shop": "A" * (MAX_VARS_HEADER + 10)})
        status, _, answer, _ = await chat(
            sut, REF, session="h2", headers={"X-Holdfast-Prompt-Vars": over}
        )
        assert status == 400 and answer["error"]["code"] == "prompt_variables"
        assert f"over {MAX_VARS_HEADER} bytes" in answer["error"]["message"]
    finally:
        await sut.server.close()
