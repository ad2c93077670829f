"""The MCP wire layer, pure: JSON-RPC framing (errors per the spec, batches, notifications, ids),
the protocol revisions and their negotiation, the 2026-07-28 envelope, the SSE reader, and how
the client judges a backend's answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from holdfast.mcp import sse, versions, wire
from holdfast.mcp.client import McpClient, McpFault, McpRpcError

META = {
    versions.PROTOCOL_VERSION_META: "2026-07-28",
    versions.CLIENT_CAPABILITIES_META: {},
}


def parse(value: Any) -> wire.Body:
    return wire.parse(value if isinstance(value, bytes) else json.dumps(value).encode())


# -- framing -------------------------------------------------------------------------------------


def test_single_messages_of_every_kind() -> None:
    (req,) = parse({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}).messages
    assert req == wire.Request(7, "tools/list", {})
    (req,) = parse({"jsonrpc": "2.0", "id": "a-1", "method": "x", "params": None}).messages
    assert req == wire.Request("a-1", "x", {})  # params null reads as none
    body = parse({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert body == wire.Body((wire.Notification("notifications/initialized", {}),), batch=False)
    (resp,) = parse({"jsonrpc": "2.0", "id": 3, "result": {"ok": True}}).messages
    assert resp == wire.Response(3, {"ok": True}, None)
    (resp,) = parse({"jsonrpc": "2.0", "id": "r", "error": {"code": 1}}).messages
    assert isinstance(resp, wire.Response) and resp.error == {"code": 1}


def test_a_body_that_cannot_be_read_is_a_wire_error() -> None:
    for raw, code in (
        (b"{nope", wire.PARSE_ERROR),
        (b"", wire.PARSE_ERROR),
        (b"\xff\xfe", wire.PARSE_ERROR),
        (b"[]", wire.INVALID_REQUEST),  # an empty batch: one error, not an empty array
        (json.dumps([{"jsonrpc": "2.0", "method": "n"}] * 65).encode(), wire.INVALID_REQUEST),
    ):
        with pytest.raises(wire.WireError) as caught:
            wire.parse(raw)
        assert caught.value.code == code, raw[:20]
    deep = b"[" * 200 + b"]" * 200
    with pytest.raises(wire.WireError) as caught:
        wire.parse(deep, max_depth=64)
    assert caught.value.code == wire.PARSE_ERROR
    assert len(parse([{"jsonrpc": "2.0", "method": "n"}] * 64).messages) == 64


@pytest.mark.parametrize(
    ("value", "code", "ident"),
    [
        (1, wire.INVALID_REQUEST, None),  # not an object
        ("x", wire.INVALID_REQUEST, None),
        ({"id": 1, "method": "m"}, wire.INVALID_REQUEST, 1),  # no "jsonrpc"
        ({"jsonrpc": "1.0", "id": 1, "method": "m"}, wire.INVALID_REQUEST, 1),
        ({"jsonrpc": "2.0", "id": 1, "method": 5}, wire.INVALID_REQUEST, 1),
        ({"jsonrpc": "2.0", "id": 1, "method": ""}, wire.INVALID_REQUEST, 1),
        ({"jsonrpc": "2.0", "id": 1, "method": "m" * 129}, wire.INVALID_REQUEST, 1),
        ({"jsonrpc": "2.0", "id": 1, "method": "m", "params": [1]}, wire.INVALID_PARAMS, 1),
        ({"jsonrpc": "2.0", "id": 1, "method": "m", "params": "p"}, wire.INVALID_PARAMS, 1),
        # MCP ids are strings or integers, never null, fractional or boolean
        ({"jsonrpc": "2.0", "id": None, "method": "m"}, wire.INVALID_REQUEST, None),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "m"}, wire.INVALID_REQUEST, None),
        ({"jsonrpc": "2.0", "id": True, "method": "m"}, wire.INVALID_REQUEST, None),
        ({"jsonrpc": "2.0", "id": [1], "method": "m"}, wire.INVALID_REQUEST, None),
        ({"jsonrpc": "2.0", "result": {}}, wire.INVALID_REQUEST, None),  # response without id
        ({"jsonrpc": "2.0", "id": 2}, wire.INVALID_REQUEST, 2),  # neither kind
    ],
)
def test_malformed_messages_are_invalid_with_the_id_when_readable(
    value: Any, code: int, ident: Any
) -> None:
    (found,) = parse(value).messages
    assert isinstance(found, wire.Invalid)
    assert (found.code, found.id) == (code, ident)
    assert found.message


def test_a_batch_answers_each_member_on_its_own() -> None:
    body = parse([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
        {"bad": 1},
        {"jsonrpc": "2.0", "id": "two", "method": "tools/list", "params": {"cursor": "c"}},
        {"jsonrpc": "2.0", "id": 9, "result": {}},
    ])  # fmt: skip
    assert body.batch
    kinds = [type(m).__name__ for m in body.messages]
    assert kinds == ["Request", "Notification", "Invalid", "Request", "Response"]
    assert body.messages[3] == wire.Request("two", "tools/list", {"cursor": "c"})
    # a one-member batch is still a batch: answered with an array
    assert parse([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]).batch


def test_replies_are_json_rpc_and_keep_the_id_type() -> None:
    assert wire.result("a", {}) == {"jsonrpc": "2.0", "id": "a", "result": {}}
    assert wire.result(0, {"x": 1})["id"] == 0
    assert wire.error(None, wire.PARSE_ERROR, "bad") == {
        "jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "bad"}}  # fmt: skip
    assert wire.error(5, wire.INVALID_PARAMS, "p", {"why": 1})["error"]["data"] == {"why": 1}
    assert wire.notification("n") == {"jsonrpc": "2.0", "method": "n"}
    assert wire.notification("n", {})["params"] == {}
    assert wire.request(3, "m", {"a": 1}) == {"jsonrpc": "2.0", "id": 3, "method": "m",
                                              "params": {"a": 1}}  # fmt: skip
    codes = (wire.PARSE_ERROR, wire.INVALID_REQUEST, wire.METHOD_NOT_FOUND, wire.INVALID_PARAMS,
             wire.INTERNAL_ERROR)  # fmt: skip
    assert codes == (-32700, -32600, -32601, -32602, -32603)
    assert wire.HTTP_STATUS[wire.METHOD_NOT_FOUND] == 404
    assert wire.HTTP_STATUS[wire.SESSION_NOT_OWNED] == 403
    assert wire.INTERNAL_ERROR not in wire.HTTP_STATUS  # answered 200: a result-level failure


# -- revisions -----------------------------------------------------------------------------------


def test_eras_negotiation_and_batching_per_revision() -> None:
    assert versions.era_of(None) == "handshake"
    for v in versions.HANDSHAKE_VERSIONS:
        assert versions.era_of(v) == "handshake"
    assert versions.era_of("2026-07-28") == versions.era_of("2099-01-01") == "modern"
    assert versions.negotiate("2025-03-26") == "2025-03-26"
    assert versions.negotiate("2024-11-05") == "2024-11-05"
    for unknown in ("2026-07-28", "1999-01-01", None, 5, ["2025-03-26"]):
        assert versions.negotiate(unknown) == versions.LATEST_HANDSHAKE == "2025-11-25"
    assert [v for v in versions.HANDSHAKE_VERSIONS if versions.batching(v)] == ["2025-03-26"]
    assert not versions.batching("2026-07-28")
    assert [versions.needs_version_header(v) for v in versions.HANDSHAKE_VERSIONS] == [
        False, False, True, True]  # fmt: skip


def test_header_values_travel_verbatim_or_base64() -> None:
    for plain in ("search", "docs://readme", "a b", ""):
        assert versions.encode_header_value(plain) == plain
    for odd in ("héllo", " edge", "tab\there", "=?base64?eA==?=", "line\nbreak"):
        encoded = versions.encode_header_value(odd)
        assert encoded.startswith("=?base64?") and encoded.isascii()
        assert versions.decode_header_value(encoded) == odd
    assert versions.decode_header_value(None) is None
    assert versions.decode_header_value("plain") == "plain"
    assert versions.decode_header_value("=?base64?!!!?=") is None
    assert versions.decode_header_value("=?base64?/w==?=") is None  # not UTF-8


def envelope(method: str = "tools/call", **params: Any) -> wire.Request:
    return wire.Request(1, method, {"_meta": dict(META), **params})


def headers(method: str = "tools/call", **extra: str) -> dict[str, str]:
    return {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method, **extra}


def test_the_modern_envelope_and_its_mirrored_headers() -> None:
    call = envelope(name="search", arguments={})
    assert versions.check_envelope(call, headers(**{"Mcp-Name": "search"})) == "2026-07-28"
    assert versions.check_envelope(envelope("tools/list"), headers("tools/list")) == "2026-07-28"
    encoded = versions.encode_header_value("ünïcode")
    named = envelope(name="ünïcode")
    assert versions.check_envelope(named, headers(**{"Mcp-Name": encoded})) == "2026-07-28"

    def refused(request: wire.Request, hdrs: dict[str, str]) -> versions.Refusal:
        found = versions.check_envelope(request, hdrs)
        assert isinstance(found, versions.Refusal), found
        return found

    assert refused(wire.Request(1, "tools/list", {}), headers()).code == wire.INVALID_PARAMS
    no_caps = wire.Request(1, "tools/list", {"_meta": {versions.PROTOCOL_VERSION_META: "x"}})
    assert "clientCapabilities" in refused(no_caps, headers("tools/list")).message
    assert refused(call, headers(**{"Mcp-Name": "other"})).code == wire.HEADER_MISMATCH
    assert refused(call, headers("tools/list")).code == wire.HEADER_MISMATCH
    mismatch = headers(**{"Mcp-Name": "search", "MCP-Protocol-Version": "2026-01-01"})
    assert refused(call, mismatch).code == wire.HEADER_MISMATCH
    future = wire.Request(1, "tools/list", {"_meta": {**META,
                          versions.PROTOCOL_VERSION_META: "2027-01-01"}})  # fmt: skip
    unsupported = refused(future, headers("tools/list", **{"MCP-Protocol-Version": "2027-01-01"}))
    assert unsupported.code == wire.UNSUPPORTED_PROTOCOL_VERSION
    assert unsupported.data == {"supported": ["2026-07-28"], "requested": "2027-01-01"}


# -- server-sent events --------------------------------------------------------------------------


def test_sse_reader_splits_events_across_chunks() -> None:
    reader = sse.SseReader()
    stream = (b": comment\r\nevent: message\r\nid: 4\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n"
              b"event: other\ndata: skipped\n\ndata:no-space\n\ndata\n\nretry: 5\n\n")  # fmt: skip
    got: list[str] = []
    for i in range(len(stream)):  # byte by byte: no event is lost at a chunk boundary
        got += reader.feed(stream[i : i + 1])
    assert got == ['{"a":\n1}', "no-space", ""]
    assert reader.feed(b"data: unfinished") == []  # no blank line yet: not an event


def test_sse_reader_refuses_what_outgrows_its_limit() -> None:
    with pytest.raises(sse.SseTooLarge, match="event"):
        sse.SseReader(10).feed(b"data: 123456\ndata: 789012\n")
    with pytest.raises(sse.SseTooLarge, match="line"):
        sse.SseReader(10).feed(b"data: " + b"x" * 20)
    reader = sse.SseReader(10)
    assert reader.feed(b"data: 12345\n\n") == ["12345"]
    assert reader.feed(b"data: 1234567890\n\n") == ["1234567890"]  # the limit itself is fine


def test_sse_frame_round_trips_through_the_reader() -> None:
    message = wire.notification("notifications/tools/list_changed", {"é": "\n"})
    framed = sse.frame(message)
    assert framed.startswith(b"event: message\ndata: ") and framed.endswith(b"\n\n")
    (data,) = sse.SseReader().feed(framed + sse.KEEPALIVE)
    assert json.loads(data) == message


# -- what the client makes of a backend's answer -------------------------------------------------


def test_off_spec_answers_are_faults_and_errors_are_rpc_errors() -> None:
    reply = McpClient._reply
    assert reply({"jsonrpc": "2.0", "id": 4, "result": {"tools": []}}, 4, 200) == {"tools": []}
    offs: tuple[Any, ...] = (
        [],
        "text",
        {"id": 4, "result": {}},  # no jsonrpc
        {"jsonrpc": "2.0", "id": 5, "result": {}},  # another request's id
        {"jsonrpc": "2.0", "id": 4, "result": [1]},  # a result that is no object
        {"jsonrpc": "2.0", "id": 4},
    )
    for off in offs:
        with pytest.raises(McpFault) as fault:
            reply(off, 4, 200)
        assert fault.value.outcome == "off_spec", off
    with pytest.raises(McpFault) as fault:
        reply({"jsonrpc": "2.0", "id": 4, "result": {}}, 4, 400)
    assert fault.value.outcome == "backend_rejected"
    with pytest.raises(McpRpcError) as rpc:
        reply({"jsonrpc": "2.0", "id": 4, "error": {"code": -32601, "message": "nope",
                                                     "data": [1]}}, 4, 404)  # fmt: skip
    assert (rpc.value.code, rpc.value.message, rpc.value.data) == (-32601, "nope", [1])
    with pytest.raises(McpRpcError) as rpc:
        reply({"jsonrpc": "2.0", "id": 4, "error": {"code": "x", "message": "m" * 5000}}, 4, 200)
    assert rpc.value.code == wire.INTERNAL_ERROR and len(rpc.value.message) == 1000
