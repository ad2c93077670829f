"""The sidecar's MCP pieces that are pure: sessions and who owns them, notification streams,
the tool list a release offers on a tool set (by its pinned contract versions), drift, and how a
backend's tool result is judged against the pinned version."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from holdfast.keyspace import Keyspace, Release
from holdfast.keyspace.contract import Contract
from holdfast.keyspace.prompt import PromptVersion
from holdfast.store import KeyValue
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState
from sidecar.contracts.book import Compiled, ContractBook
from sidecar.mcp import catalog
from sidecar.mcp.calls import BREAKER_OUTCOME, judge
from sidecar.mcp.sessions import (
    PREFIX,
    SessionBook,
    SessionProblem,
    mint,
    owned_by,
    toolset_of,
)
from sidecar.mcp.streams import LIST_CHANGED, MAX_QUEUED, Stream, Streams

KS = Keyspace("dev")
DOCS = "http://127.0.0.1:9400/mcp"
OTHER = "http://127.0.0.1:9500/mcp"
ARGS = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
HITS = {"type": "object", "properties": {"hits": {"type": "array"}}, "required": ["hits"]}


# -- sessions ------------------------------------------------------------------------------------


def test_minted_ids_name_their_tool_set_and_owner() -> None:
    plain, owned = mint("docs"), mint("docs", "conversation-42")
    assert plain.startswith(PREFIX) and plain != mint("docs")
    assert toolset_of(plain) == toolset_of(owned) == "docs"
    assert toolset_of(mint("a.b")) == "a.b"  # tool set names may hold dots
    for foreign in ("", "docs", "mcp.docs.xyz", "mcp..0123", f"mcp.docs.{'0' * 31}",
                    f"mcp.docs.{'g' * 32}", f"{plain}-abc", f"{plain}-{'z' * 16}",
                    f"mcp.docs.{'0' * 32}/x"):  # fmt: skip
        assert toolset_of(foreign) is None, foreign
    assert owned_by(plain, None) and not owned_by(plain, "conversation-42")
    assert owned_by(owned, "conversation-42")
    assert not owned_by(owned, "conversation-43") and not owned_by(owned, None)
    assert not owned_by("not-minted", None)
    assert len(mint("d" * 63, "x" * 128)) <= 128  # fits an id (and a pin key) at the extremes


def test_the_book_opens_finds_and_refuses_other_owners() -> None:
    book = SessionBook(idle_s=100.0)
    alice = book.open("docs", "2025-11-25", "alice", now=0.0)
    assert (alice.pin_key, alice.owner, alice.state) == ("alice", "alice", "initializing")
    anonymous = book.open("docs", "2025-03-26", None, now=0.0)
    assert anonymous.pin_key == anonymous.id  # pinned under its own id
    assert book.find(alice.id, "docs", "alice", now=10.0) is alice
    assert alice.last_seen == 10.0
    for owner in ("mallory", None):  # the owner it was opened with, exactly
        with pytest.raises(SessionProblem) as refused:
            book.find(alice.id, "docs", owner, now=11.0)
        assert refused.value.status == 403 and "another X-Holdfast-Session" in refused.value.message
    with pytest.raises(SessionProblem) as refused:
        book.find(anonymous.id, "docs", "mallory", now=11.0)
    assert refused.value.status == 403 and "without X-Holdfast-Session" in refused.value.message
    assert book.refused == 3
    with pytest.raises(SessionProblem) as refused:
        book.find(alice.id, "other", "alice", now=12.0)  # another tool set's path
    assert refused.value.status == 404
    unknown = mint("docs", "alice")
    assert book.find(unknown, "docs", "alice", now=12.0) is None  # may be revived
    with pytest.raises(SessionProblem):
        book.find("mcp.docs.nope", "docs", None, now=12.0)  # never minted: no revival either


def test_revival_follows_the_owner_the_id_was_minted_for() -> None:
    book = SessionBook()
    theirs = mint("docs", "alice")
    book.check_revival(theirs, "docs", "alice")
    for owner in ("mallory", None):
        with pytest.raises(SessionProblem) as refused:
            book.check_revival(theirs, "docs", owner)
        assert refused.value.status == 403
    anonymous = mint("docs")
    book.check_revival(anonymous, "docs", None)
    with pytest.raises(SessionProblem) as refused:
        book.check_revival(anonymous, "docs", "alice")
    assert refused.value.status == 403
    with pytest.raises(SessionProblem) as refused:
        book.check_revival(theirs, "other", "alice")
    assert refused.value.status == 404
    revived = book.open("docs", "2025-11-25", "alice", now=0.0, session_id=theirs)
    assert (revived.id, book.revived, book.opened) == (theirs, 1, 0)


def test_sessions_move_forward_only_idle_out_and_are_bounded() -> None:
    book = SessionBook(max_sessions=2, idle_s=60.0)
    first = book.open("docs", "2025-11-25", None, now=0.0)
    first.move("ready")
    first.move("ready")  # idempotent
    with pytest.raises(SessionProblem):
        first.move("initializing")
    second = book.open("docs", "2025-11-25", None, now=30.0)
    third = book.open("docs", "2025-11-25", None, now=40.0)  # full: the least recent goes
    assert len(book) == 2 and book.find(first.id, "docs", None, now=41.0) is None
    assert book.expired == 1
    assert book.find(second.id, "docs", None, now=89.0) is second
    assert book.find(third.id, "docs", None, now=101.0) is None  # idle for 61 s: gone
    assert book.close(second.id) is second and second.state == "closed"
    assert book.close(second.id) is None
    assert book.status() == {"sessions": 0, "opened": 3, "revived": 0, "expired": 2,
                             "refused_not_owner": 0}  # fmt: skip


# -- notification streams ------------------------------------------------------------------------


def test_streams_tell_each_watcher_once_per_release_change() -> None:
    streams = Streams()
    handshake = Stream("conv-1", "r1", frozenset({"tools", "prompts"}))
    modern = Stream("conv-1", "r1", frozenset({"tools"}), subscription="sub-9")
    other = Stream("conv-2", "r1", frozenset({"tools"}))
    for s in (handshake, modern, other):
        streams.add(s)
    assert len(streams) == 3 and streams.watching("conv-1") and not streams.watching("x")
    assert streams.release_changed("conv-1", "r1") == []  # the release they already see
    sent = streams.release_changed("conv-1", "r2")
    assert sorted(sent) == sorted([LIST_CHANGED["prompts"], LIST_CHANGED["tools"],
                                   LIST_CHANGED["tools"]])  # fmt: skip
    assert streams.release_changed("conv-1", "r2") == []  # told once
    assert handshake.queue.get_nowait() == {"jsonrpc": "2.0", "method": LIST_CHANGED["prompts"]}
    assert handshake.queue.get_nowait() == {"jsonrpc": "2.0", "method": LIST_CHANGED["tools"]}
    assert modern.queue.get_nowait()["params"] == {
        "_meta": {"io.modelcontextprotocol/subscriptionId": "sub-9"}}  # fmt: skip
    assert other.queue.empty() and streams.sent == 3
    streams.remove(handshake)
    streams.remove(modern)
    streams.remove(modern)  # twice: harmless
    assert not streams.watching("conv-1") and len(streams) == 1


def test_a_stream_that_falls_behind_drops_notifications_without_blocking() -> None:
    streams = Streams()
    slow = Stream("c", "r0", frozenset({"tools"}))
    streams.add(slow)
    for i in range(MAX_QUEUED + 5):
        streams.release_changed("c", f"r{i + 1}")
    assert slow.queue.qsize() == MAX_QUEUED and streams.sent == MAX_QUEUED
    assert isinstance(slow.queue, asyncio.Queue)


# -- the catalog of a release's tool set ---------------------------------------------------------


def contract(tool: str, version: str, backend: str, **over: Any) -> Contract:
    return Contract(tool=tool, version=version, args_schema=over.pop("args", ARGS),
                    result_schema=over.pop("result", HITS), backend=backend, **over)  # fmt: skip


def snapshot(*contracts: Contract) -> ConfigState:
    state = ConfigState(KS, "support", kinds=CONFIG_KINDS)
    records = {KS.contract(c.tool, c.version): c.encode() for c in contracts}
    state.apply_reset(1, {k: KeyValue(k, v, 1, 1, 1) for k, v in records.items()}, "etcd")
    return state


def release(contracts: dict[str, str], mcp: dict[str, tuple[str, ...]]) -> Release:
    return Release(agent="support", name="r1", model="m", base_url="http://127.0.0.1:9/v1",
                   contracts=contracts, mcp=mcp)  # fmt: skip


def test_a_tool_set_offers_exactly_the_pinned_versions_of_its_backends() -> None:
    state = snapshot(
        contract("search", "1.0.0", DOCS, description="Search the docs."),
        contract("search", "2.0.0", DOCS, args={"type": "object"}),
        contract("weather", "1.0.0", OTHER),
        contract("local", "1.0.0", ""),
    )
    book = ContractBook()
    r1 = release({"search": "1.0.0", "weather": "1.0.0", "local": "1.0.0", "gone": "9.0.0"},
                 {"docs": (DOCS,), "wx": (OTHER,)})  # fmt: skip
    docs = catalog.exposed(book, state.current, r1, "docs")
    assert list(docs.tools) == ["search"]
    assert docs.tools["search"].contract.version == "1.0.0"
    assert docs.missing == (("gone", "9.0.0"),)
    assert list(catalog.exposed(book, state.current, r1, "wx").tools) == ["weather"]
    assert catalog.exposed(book, state.current, r1, "nope") == catalog.Exposed({})
    assert catalog.exposed(book, None, r1, "docs").tools == {}  # no config yet
    both = release({"search": "2.0.0", "weather": "1.0.0"}, {"all": (DOCS, OTHER)})
    found = catalog.exposed(book, state.current, both, "all")
    assert list(found.tools) == ["search", "weather"]  # sorted: a stable list
    assert found.tools["search"].contract.args_schema == {"type": "object"}


def compiled(**over: Any) -> Compiled:
    state = snapshot(contract("search", "1.0.0", DOCS, **over))
    found = ContractBook().compiled(state.current, "search", "1.0.0")
    assert found is not None
    return found


def test_tool_definitions_come_from_the_contract_and_only_presentation_from_the_backend() -> None:
    pinned = compiled(description="Search the docs.")
    assert catalog.tool_definition(pinned) == {
        "name": "search", "inputSchema": ARGS, "description": "Search the docs.",
        "outputSchema": HITS}  # fmt: skip
    live = {
        "name": "search",
        "inputSchema": {"type": "object"},
        "description": "changed",
        "title": "Search",
        "annotations": {"readOnlyHint": True},
        "icons": [],
        "extra": 1,
    }
    shown = catalog.tool_definition(pinned, live)
    assert shown["inputSchema"] == ARGS and shown["description"] == "Search the docs."
    assert (shown["title"], shown["annotations"], shown["icons"]) == ("Search",
            {"readOnlyHint": True}, [])  # fmt: skip
    assert "extra" not in shown
    bare = catalog.tool_definition(compiled(result={}))
    assert "outputSchema" not in bare and "description" not in bare


def test_drift_names_what_changed() -> None:
    pinned = compiled()
    same = {"name": "search", "inputSchema": dict(reversed(list(ARGS.items()))),
            "outputSchema": HITS, "description": "other words"}  # fmt: skip
    assert catalog.drift(pinned, same) is None  # key order and presentation are no drift
    assert catalog.drift(pinned, None) == "the backend no longer lists the tool"
    wider = {**same, "inputSchema": {**ARGS, "properties": {"query": {}, "lang": {}}}}
    assert catalog.drift(pinned, wider) == "inputSchema changed"
    assert catalog.drift(pinned, {**wider, "outputSchema": None}) == (
        "inputSchema and outputSchema changed"
    )
    no_output = compiled(result={})
    assert catalog.drift(no_output, {"inputSchema": ARGS}) is None


def test_managed_prompts_as_mcp_prompts() -> None:
    record = PromptVersion(name="triage", version="3", text="Triage {{ticket}} for {{user}}.",
                           status="active")  # fmt: skip
    definition = catalog.prompt_definition(record)
    assert definition["name"] == "triage" and "v3" in definition["description"]
    assert sorted(a["name"] for a in definition["arguments"]) == ["ticket", "user"]
    assert all(a["required"] for a in definition["arguments"])
    got = catalog.prompt_messages(record, "Triage T-1 for bo.")
    text = {"type": "text", "text": "Triage T-1 for bo."}
    assert got["messages"] == [{"role": "user", "content": text}]
    assert got["_meta"] == {"holdfast/prompt": "triage@3"}


# -- judging a backend's result ------------------------------------------------------------------


def test_results_are_judged_against_the_pinned_version() -> None:
    pinned = compiled()
    ok = judge(pinned, {"content": [], "structuredContent": {"hits": []}, "resultType": "complete"})
    assert ok.outcome == "ok" and "resultType" not in ok.result
    own = judge(pinned, {"content": [{"type": "text", "text": "down"}], "isError": True})
    assert own.outcome == "tool_error" and own.result["content"][0]["text"] == "down"
    assert BREAKER_OUTCOME["tool_error"] == "ok"  # the tool's own error is an answer
    broken = judge(pinned, {"content": [], "structuredContent": {"hits": "no"}})
    assert broken.outcome == "invalid_result" and broken.result["isError"] is True
    assert "search@1.0.0" in broken.result["content"][0]["text"]
    assert "withheld" in broken.result["content"][0]["text"]
    assert broken.result["_meta"] == {"holdfast/outcome": "invalid_result",
                                      "holdfast/contract": "search@1.0.0"}  # fmt: skip
    missing = judge(pinned, {"content": [{"type": "text", "text": "x"}]})
    assert missing.outcome == "invalid_result"
    assert "no structuredContent" in missing.result["content"][0]["text"]
    off = judge(pinned, {"structuredContent": {"hits": []}})
    assert off.outcome == "off_spec" and off.result["isError"] is True
    loose = compiled(result={})
    assert judge(loose, {"content": [{"type": "text", "text": "free"}]}).outcome == "ok"
