"""Model tool calls on the chat path, without an event loop: fragments collected per choice and
call index (parallel calls interleaved), each call checked, the stream observer's holding,
relaying, refusing and hold limit; and declared tools that differ only in annotations."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from holdfast.contracts.schema import canonical, compile_validator
from holdfast.dialects import ToolCall, openai_chat
from holdfast.dialects.openai_chat import ChatStream
from holdfast.dialects.tool_calls import MAX_ARGUMENT_BYTES
from holdfast.keyspace import Keyspace, Release
from holdfast.keyspace.contract import Contract
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState
from sidecar.contracts import filter as contract_filter
from sidecar.contracts.book import Compiled, ContractBook, Pinned
from sidecar.contracts.checks import check_call, declared_mismatch
from sidecar.contracts.filter import ContractFilter, _CallObserver
from sidecar.contracts.stats import ContractStats
from sidecar.pipeline.exchange import Exchange, Outcome
from sidecar.routing.resolve import Resolved

ARGS: dict[str, Any] = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 1, "description": "what to find"}},
    "required": ["query"],
    "additionalProperties": False,
}


def compiled(args: dict[str, Any] = ARGS, tool: str = "search") -> Compiled:
    contract = Contract(tool=tool, version="1.0.0", args_schema=args, result_schema={})
    return Compiled(contract, compile_validator(args), compile_validator({}), canonical(args))


def pins(policy: str = "enforce") -> dict[str, Pinned]:
    return {
        "search": Pinned("search", "1.0.0", compiled(), policy),  # type: ignore[arg-type]
        "lookup": Pinned("lookup", "1.0.0", compiled(tool="lookup"), policy),  # type: ignore[arg-type]
    }


def delta(
    calls: list[dict[str, Any]] | None = None,
    *,
    choice: int = 0,
    finish: str | None = None,
    content: str | None = None,
) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if calls is not None:
        d["tool_calls"] = calls
    if content is not None:
        d["content"] = content
    return {"choices": [{"index": choice, "delta": d, "finish_reason": finish}]}


def part(index: int, args: str, *, name: str = "", call_id: str = "") -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": args}
    if name:
        function["name"] = name
    call: dict[str, Any] = {"index": index, "function": function}
    if call_id:
        call["id"] = call_id
    return call


def sse(chunk: dict[str, Any] | str) -> bytes:
    data = chunk if isinstance(chunk, str) else json.dumps(chunk)
    return f"data: {data}\n\n".encode()


INTERLEAVED = [
    delta([part(0, "", name="search", call_id="a")]),
    delta([part(1, "", name="lookup", call_id="b")]),
    delta([part(0, '{"que')]),
    delta([part(1, '{"query": ')]),
    delta([part(0, 'ry": "x"}')]),
    delta([part(1, '"y"}')]),
    delta(finish="tool_calls"),
]


# -- the chat dialect's stream decoder: tool calls assembled from fragments --------------------


class Calls:
    """The decoder as the relay drives it: one SSE event per chunk given."""

    def __init__(self, max_argument_bytes: int = MAX_ARGUMENT_BYTES) -> None:
        self.decoder = ChatStream(max_argument_bytes)

    def feed(self, chunk: dict[str, Any]) -> list[ToolCall]:
        return list(self.decoder.feed(sse(chunk)).calls)

    @property
    def open_names(self) -> list[str]:
        return self.decoder.open_calls

    def finish(self) -> list[ToolCall]:
        return self.decoder.finish()


def test_interleaved_parallel_calls_complete_only_when_the_choice_finishes() -> None:
    calls = Calls()
    done = [c for chunk in INTERLEAVED[:-1] for c in calls.feed(chunk)]
    assert done == [] and calls.open_names == ["search", "lookup"]
    assert calls.feed(INTERLEAVED[-1]) == [
        ToolCall(0, 0, "search", '{"query": "x"}'),
        ToolCall(0, 1, "lookup", '{"query": "y"}'),
    ]
    assert calls.open_names == []


def test_several_choices_and_the_end_of_the_stream() -> None:
    calls = Calls()
    calls.feed(delta([part(0, '{"query": "a"}', name="search")], choice=0))
    calls.feed(delta([part(0, '{"query":', name="lookup")], choice=1))
    assert calls.feed(delta(choice=0, finish="tool_calls")) == [
        ToolCall(0, 0, "search", '{"query": "a"}')
    ]
    calls.feed(delta([part(0, ' "b"}')], choice=1))
    assert calls.finish() == [ToolCall(1, 0, "lookup", '{"query": "b"}')]


def test_a_new_id_at_a_reused_index_completes_the_earlier_call() -> None:
    calls = Calls()
    calls.feed(delta([part(0, '{"query": "a"}', name="search", call_id="c1")]))
    done = calls.feed(delta([part(0, '{"query": "b"}', name="lookup", call_id="c2")]))
    assert done == [ToolCall(0, 0, "search", '{"query": "a"}')]
    assert calls.finish() == [ToolCall(0, 0, "lookup", '{"query": "b"}')]


def test_arguments_over_the_cap_are_truncated_not_kept() -> None:
    calls = Calls(max_argument_bytes=10)
    calls.feed(delta([part(0, '{"query": ', name="search")]))
    calls.feed(delta([part(0, '"0123456789"}')]))
    (call,) = calls.finish()
    assert call.truncated and call.arguments == ""
    assert MAX_ARGUMENT_BYTES == 1 << 20


def test_done_completes_every_open_call() -> None:
    calls = Calls()
    calls.feed(delta([part(0, '{"query": "a"}', name="search")]))
    view = calls.decoder.feed(sse("[DONE]"))
    assert view.done and view.calls == [ToolCall(0, 0, "search", '{"query": "a"}')]


# -- check_call -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "detail"),
    [
        (ToolCall(0, 0, "search", '{"query": "x"}'), None),
        (ToolCall(0, 0, "unpinned", "not json at all"), None),
        (ToolCall(0, 0, "search", '{"query": "x"'), "arguments are not JSON"),
        (ToolCall(0, 0, "search", "[1, 2"), "arguments are not JSON"),
        (ToolCall(0, 0, "search", ""), '"query" is a required property'),
        (ToolCall(0, 0, "search", '{"query": ""}'), "query: "),
        (ToolCall(0, 0, "search", "", truncated=True), "larger than the sidecar checks"),
        (ToolCall(0, 0, "search", "[" * 5000 + "]" * 5000), "arguments are not JSON"),
    ],
)
def test_check_call(call: ToolCall, detail: str | None) -> None:
    found = check_call(call, pins())
    if detail is None:
        assert found is None
    else:
        assert found is not None and found.kind == "call" and detail in found.detail


def test_arguments_over_one_mib_are_a_violation() -> None:
    calls = Calls()
    calls.feed(delta([part(0, '{"query": "', name="search")]))
    calls.feed(delta([part(0, "x" * MAX_ARGUMENT_BYTES)]))
    calls.feed(delta([part(0, '"}')]))
    (call,) = calls.finish()
    found = check_call(call, pins())
    assert found is not None and "larger than the sidecar checks" in found.detail


# -- the stream observer --------------------------------------------------------------------------


def observer(policy: str = "enforce") -> tuple[_CallObserver, ContractStats]:
    stats = ContractStats(CollectorRegistry(), "support")
    owner = ContractFilter(ConfigState(Keyspace("dev"), "support", kinds=CONFIG_KINDS),
                           ContractBook(), stats)  # fmt: skip
    release = Release(agent="support", name="r1", model="m", base_url="http://127.0.0.1:9/v1")
    chat = openai_chat.DIALECT
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    exchange = Exchange(dialect=chat, request=chat.parse(body),
                        resolved=Resolved(release, 1), request_id="req", headers={},
                        decoder=chat.stream_decoder())  # fmt: skip
    return _CallObserver(owner, exchange, pins(policy), stream=True), stats


def push(obs: _CallObserver, chunk: dict[str, Any] | str) -> bytes | None:
    """One event as the relay hands it over: decoded by the exchange's decoder, then observed."""
    event = sse(chunk)
    assert obs.exchange.decoder is not None
    return obs.on_event(obs.exchange.decoder.feed(event), event)


def end(obs: _CallObserver, outcome: Outcome) -> None:
    """How the relay ends a stream: the calls still open, if it ended whole; then close."""
    assert obs.exchange.decoder is not None
    if outcome.completed:
        obs.on_end(obs.exchange.decoder.finish())
    obs.close(outcome)


def run(obs: _CallObserver, chunks: list[dict[str, Any] | str]) -> bytes:
    return b"".join(out for c in chunks if (out := push(obs, c)) is not None)


def violations(stats: ContractStats) -> dict[tuple[str, str], int]:
    return {(s["tool"], k): n for s in stats.stats() for k, n in s["violations"].items()}


def test_valid_interleaved_calls_are_held_then_relayed_whole() -> None:
    obs, stats = observer()
    relayed = [push(obs, c) for c in INTERLEAVED[:-1]]
    assert relayed == [None] * 6  # held: neither call is complete
    out = push(obs, INTERLEAVED[-1])
    assert out == b"".join(sse(c) for c in INTERLEAVED)
    assert push(obs, "[DONE]") == sse("[DONE]") and violations(stats) == {}


def test_first_valid_second_invalid_shows_only_the_error() -> None:
    obs, stats = observer()
    out = run(obs, [delta(content="Let me look."), delta([part(0, '{"query": "x"}',
                    name="search")]), delta([part(1, '{"query": 5}', name="lookup")]),
                    delta(finish="tool_calls"), "[DONE]"])  # fmt: skip
    events = [json.loads(e[6:]) for e in out.split(b"\n\n") if e]
    assert events[0]["choices"][0]["delta"]["content"] == "Let me look."
    assert len(events) == 2 and events[1]["error"]["code"] == "tool_call_contract_violation"
    assert "lookup@1.0.0" in events[1]["error"]["message"]
    assert b"tool_calls" not in out  # no fragment of either call reached the agent
    assert violations(stats) == {("lookup", "call"): 1}


def test_report_policy_passes_everything_and_marks_the_violation() -> None:
    obs, stats = observer("report")
    chunks = [delta([part(0, '{"query": 5}', name="search")]), delta(finish="tool_calls")]
    out = run(obs, [*chunks, "[DONE]"])
    assert out == sse(chunks[0]) + b": holdfast-contract-violation search@1.0.0 call\n\n" + sse(
        chunks[1]
    ) + sse("[DONE]")
    assert violations(stats) == {("search", "call"): 1}


def test_stream_cut_mid_call_relays_nothing_and_counts_nothing() -> None:
    obs, stats = observer()
    out = run(obs, [delta([part(0, '{"query": "ha', name="search")])])
    assert out == b""
    end(obs, Outcome("upstream_unreachable", 200, 0.1, completed=False))
    assert violations(stats) == {}


def test_stream_ended_without_done_checks_what_is_left() -> None:
    obs, stats = observer("report")
    run(obs, [delta([part(0, "{not json", name="search")])])
    end(obs, Outcome("ok", 200, 0.1, completed=True))
    assert violations(stats) == {("search", "call"): 1}


def test_hold_limit_ends_the_stream_instead_of_leaking_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(contract_filter, "MAX_HELD_BYTES", 1000)
    obs, stats = observer()
    chunks = [delta([part(0, '{"query": "', name="search")])]
    chunks += [delta([part(0, "x" * 40)]) for _ in range(30)]
    out = run(obs, [*chunks, delta([part(0, '"}')]), delta(finish="tool_calls"), "[DONE]"])
    (event,) = [json.loads(e[6:]) for e in out.split(b"\n\n") if e]
    assert event["error"]["code"] == "tool_call_contract_violation"
    assert "streamed more than 1000 bytes" in event["error"]["message"]
    assert "search@1.0.0" in event["error"]["message"]
    assert violations(stats) == {("search", "call"): 1}


def test_a_call_whose_name_comes_late_is_held() -> None:
    obs, _ = observer()
    nameless = delta([{"index": 0, "id": "c", "function": {"arguments": ""}}])
    assert push(obs, nameless) is None
    out = run(obs, [delta([part(0, '{"query": 5}', name="search")]), delta(finish="stop")])
    assert b"tool_call_contract_violation" in out and b"tool_calls" not in out


# -- declared tools -------------------------------------------------------------------------------


def test_declared_tools_differing_only_in_annotations_match() -> None:
    reworded = {**ARGS, "description": "Search the docs", "title": "Search",
                "properties": {"query": {"type": "string", "minLength": 1,
                                         "description": "words to look for",
                                         "examples": ["holdfast"]}}}  # fmt: skip
    assert declared_mismatch(compiled(), reworded) is None
    assert declared_mismatch(compiled(), ARGS) is None


@pytest.mark.parametrize(
    ("declared", "words"),
    [
        (
            {
                **ARGS,
                "required": ["query", "lang"],
                "properties": {**ARGS["properties"], "lang": {"type": "string"}},
            },
            "lang: new required field",
        ),
        ({**ARGS, "properties": {"query": {"type": "integer"}}}, "retyped from string"),
        (
            {**ARGS, "properties": {"query": {"type": "string", "minLength": "ten"}}},
            "cannot be analysed",
        ),
        ("not a schema", "schema changed"),
    ],
)
def test_declared_tools_that_accept_something_else_mismatch(declared: Any, words: str) -> None:
    found = declared_mismatch(compiled(), declared)
    assert found is not None and words in found
