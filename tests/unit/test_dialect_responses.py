"""The OpenAI Responses dialect as the filters read it, and the state records the sidecar keeps
of it: request view, answers, stream events, rebuilding a conversation, the state table and its
writer. Pure (the writer over MemoryStore)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from holdfast.dialects import RequestRefused, StateGone, openai_responses, stateful
from holdfast.keyspace import Keyspace, StateOwner
from holdfast.store import KeyValue
from holdfast.store.memory import MemoryStore
from sidecar.pins.state_writer import StateWriter
from sidecar.pins.states import StateTable
from sidecar.pins.table import PinTable
from sidecar.pins.writer import PinWriter

D = openai_responses.DIALECT
TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}


def event(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def test_the_request_as_the_filters_read_it() -> None:
    body: dict[str, Any] = {
        "model": "support",
        "input": [
            {"role": "developer", "content": "@prompt:house"},
            {"role": "user", "content": [{"type": "input_text", "text": "hello there"}]},
        ],
        "instructions": "@prompt:greeter",
        "tools": [TOOL, {"type": "web_search"}],
        "max_output_tokens": 50,
        "prompt_cache_key": "conv-7",
        "user": "alice",
    }
    request = D.parse(body)
    assert stateful(D) is D
    assert request.session_hint == "conv-7"  # one conversation's key before the end user
    assert request.output_cap() == (50, 1)
    assert request.ask_stream_usage() is True and "stream_options" not in body
    assert [t.name for t in request.declared_tools()] == ["lookup"]  # built-ins pass through
    slots = request.system_slots()
    assert [(s.position, s.text, s.where) for s in slots] == [
        (0, "@prompt:greeter", "instructions"),
        (1, "@prompt:house", "input[0]"),
    ]
    request.set_system(0, "You greet.")
    request.set_system(1, "House rules.")
    assert body["instructions"] == "You greet." and body["input"][0]["content"] == "House rules."
    assert request.last_user_text(5) == "hello"
    assert request.write_output_cap(9, "https://api.openai.com/v1") == "max_output_tokens"
    assert body["max_output_tokens"] == 9
    assert request.prompt_estimate("bytes") > request.prompt_estimate("chars") > 0
    shadow = request.shadow_copy("other")
    assert shadow["store"] is False and shadow["model"] == "other" and "stream" not in shadow


def test_state_references_and_rebuilding_the_request() -> None:
    request = D.parse({"model": "m", "input": "more", "previous_response_id": "resp_1"})
    ref = request.state_ref()
    assert ref is not None and (ref.id, ref.kind, ref.param) == (
        "resp_1",
        "response",
        "previous_response_id",
    )
    assert request.stores
    request.self_contained([{"type": "message", "role": "user", "content": "before"}])
    assert "previous_response_id" not in request.body
    assert request.body["input"] == [
        {"type": "message", "role": "user", "content": "before"},
        {"role": "user", "content": "more"},
    ]
    conv = D.parse({"model": "m", "input": "x", "conversation": {"id": "conv_1"}, "store": False})
    ref = conv.state_ref()
    assert ref is not None and ref.kind == "conversation" and not conv.stores


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "input"),
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m", "input": [1]}, "input"),
        ({"input": "x"}, "model"),
        ({"model": "m", "input": "x", "tools": {}}, "tools"),
        ({"model": "m", "input": "x", "stream": 1}, "stream"),
        ({"model": "m", "input": "x", "max_output_tokens": True}, "max_output_tokens"),
        ({"model": "m", "input": "x", "previous_response_id": 5}, "previous_response_id"),
        ({"model": "m", "input": "x", "conversation": 5}, "conversation"),
    ],
)
def test_bodies_refused_at_the_door(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestRefused) as info:
        D.parse(body)
    assert info.value.param == param


def test_a_whole_answer() -> None:
    body = {
        "id": "resp_9",
        "object": "response",
        "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "Hi "},
                                             {"type": "refusal", "refusal": "no"}]},
            {"type": "function_call", "name": "lookup", "arguments": '{"q":1}', "call_id": "c"},
        ],
        "usage": {"input_tokens": 10, "output_tokens": 4},
    }  # fmt: skip
    answer = D.decode_body(json.dumps(body).encode())
    assert answer is not None
    assert (answer.text, answer.refusal, answer.issued) == ("Hi ", True, "resp_9")
    assert [(c.index, c.name, c.arguments) for c in answer.tool_calls] == [(2, "lookup", '{"q":1}')]
    assert answer.usage is not None and answer.usage.total == 14
    chat = {"choices": [{"message": {"content": "hi"}}], "output": []}  # another API's answer
    assert D.decode_body(json.dumps(chat).encode()) is None
    assert D.decode_body(b"not json") is None


def test_stream_events_text_calls_usage_and_the_id() -> None:
    stream = D.stream_decoder()
    created = stream.feed(event("response.created", response={"id": "resp_1", "output": []}))
    assert created.issued == "resp_1" and not created.content
    assert stream.feed(event("response.output_text.delta", delta="Hi", output_index=0)).text == "Hi"
    item = {"type": "function_call", "name": "lookup", "call_id": "c1", "arguments": ""}
    added = stream.feed(event("response.output_item.added", output_index=1, item=item))
    assert added.content == 1 and stream.open_calls == ["lookup"]
    for part in ('{"q"', ":1}"):
        view = stream.feed(
            event("response.function_call_arguments.delta", output_index=1, delta=part)
        )
        assert view.content == 1 and not view.calls
    done = stream.feed(
        event("response.function_call_arguments.done", output_index=1, arguments='{"q":1}')
    )
    assert [(c.index, c.name, c.arguments) for c in done.calls] == [(1, "lookup", '{"q":1}')]
    assert not stream.open_calls
    item_done = stream.feed(event("response.output_item.done", output_index=1, item=item))
    assert not item_done.calls  # complete once
    usage = {"input_tokens": 3, "output_tokens": 7}
    end = stream.feed(event("response.completed", response={"usage": usage}))
    assert end.done and end.usage is not None and end.usage.completion == 7
    assert stream.feed(event("error", code="x", message="y")).error
    failed = D.stream_decoder()
    failed.feed(event("response.output_item.added", output_index=0, item=item))
    view = failed.feed(event("response.failed", response={}))
    assert view.error and view.done and not view.calls  # a failed answer's calls are not judged
    assert D.stream_decoder().feed(b"data: [DONE]\n\n").done
    err = D.stream_error("bad", "upstream", "upstream_timeout")
    assert err.startswith(b"event: error\ndata: ")
    payload = json.loads(err.split(b"data: ", 1)[1])
    assert (payload["type"], payload["code"], payload["message"]) == (
        "error",
        "upstream_timeout",
        "bad",
    )


def fetcher(store: dict[str, tuple[list[Any], str | None, list[Any]]], page: int = 2) -> Any:
    calls: list[str] = []

    async def fetch(path: str) -> bytes | None:
        calls.append(path)
        rid = path.split("/")[2].split("?")[0]
        if rid not in store:
            return None
        output, previous, items = store[rid]
        if "/input_items" not in path:
            return json.dumps(
                {"id": rid, "output": output, "previous_response_id": previous}
            ).encode()
        after = path.split("after=")[1] if "after=" in path else None
        start = [i["id"] for i in items].index(after) + 1 if after else 0
        data = items[start : start + page]
        more = start + page < len(items)
        return json.dumps({"data": data, "has_more": more, "last_id": data[-1]["id"]}).encode()

    fetch.calls = calls  # type: ignore[attr-defined]
    return fetch


def msg(i: str, role: str, text: str) -> dict[str, Any]:
    return {"id": i, "type": "message", "role": role, "status": "completed", "content": text}


def test_history_when_the_provider_lists_the_whole_context() -> None:
    out1 = [msg("m2", "assistant", "a1"), {"id": "rs", "type": "reasoning", "summary": []}]
    out2 = [msg("m4", "assistant", "a2")]
    store = {
        "r1": (out1, None, [msg("m1", "user", "q1")]),
        "r2": (out2, "r1", [msg("m1", "user", "q1"), *out1, msg("m3", "user", "q2")]),
    }
    history = asyncio.run(D.history("r2", fetcher(store)))
    assert [h["content"] for h in history] == ["q1", "a1", "q2", "a2"]
    assert all("id" not in h and "status" not in h for h in history)


def test_history_when_the_provider_lists_each_answers_own_input() -> None:
    out1, out2 = [msg("m2", "assistant", "a1")], [msg("m4", "assistant", "a2")]
    store = {
        "r1": (out1, None, [msg("m1", "user", "q1")]),
        "r2": (out2, "r1", [msg("m3", "user", "q2")]),
        "r3": ([msg("m6", "assistant", "a3")], "r2", [msg("m5", "user", "q3")]),
    }
    history = asyncio.run(D.history("r3", fetcher(store)))
    assert [h["content"] for h in history] == ["q1", "a1", "q2", "a2", "q3", "a3"]


def test_history_of_state_the_provider_no_longer_has() -> None:
    with pytest.raises(StateGone):
        asyncio.run(D.history("gone", fetcher({})))


def owner(state_id: str, release: str = "r1") -> StateOwner:
    return StateOwner(agent="support", id=state_id, kind="response", release=release,
                      session=state_id, issued_at=1.0)  # fmt: skip


async def test_records_are_written_in_batches_under_the_pins_lease() -> None:
    ks = Keyspace("dev")
    store = MemoryStore()
    pins = PinTable(ks, "support")
    leases = PinWriter(store, pins, ks, _metrics(), ttl=60, max_pending=10)
    table = StateTable(ks, "support")
    writer = StateWriter(store, table, ks, leases, max_pending=1000)
    for n in range(100):
        table.record(owner(f"resp_{n}"))
    assert writer.pending == 100
    while writer.pending > 0:
        assert await writer._flush_batch()
    assert writer.batches == 2 and writer.written == 100  # 64 + 36: two transactions
    _, kvs = await store.list_prefix(ks.state_owners_of("support"))
    assert len(kvs) == 100 and {kv.lease for kv in kvs} == {leases.lease_id}
    table.drop("resp_3")
    assert table.get("resp_3") is None
    assert await writer._flush_batch()
    assert await store.get(ks.state_owner("support", "resp_3")) is None
    # etcd is down: writes wait, locally known ids keep their owner
    store.unavailable = True
    table.record(owner("resp_x", "r2"))
    assert not await writer._flush_batch()
    pending: int = writer.pending  # mypy: the flush above changed it
    assert pending == 1 and table.get("resp_x") == owner("resp_x", "r2")
    store.unavailable = False
    assert await writer._flush_batch() and writer.pending == 0


def test_the_watch_is_the_authority_and_bad_records_are_refused() -> None:
    ks = Keyspace("dev")
    table = StateTable(ks, "support")
    key = ks.state_owner("support", "resp_1")
    assert table.adopt(KeyValue(key, owner("resp_1", "r2").encode(), 5, 5, 1)) is not None
    assert table.get("resp_1") == owner("resp_1", "r2")
    wrong = KeyValue(ks.state_owner("support", "resp_2"), owner("resp_1").encode(), 6, 6, 1)
    assert table.adopt(wrong) is None and table.rejected == 1
    assert table.adopt(KeyValue(key, b"junk", 7, 5, 2)) is None
    assert table.get("resp_1") == owner("resp_1", "r2")  # the previous good record kept


def _metrics() -> Any:
    from prometheus_client import CollectorRegistry

    from sidecar.pins.metrics import PinMetrics

    return PinMetrics(CollectorRegistry(), "support")
