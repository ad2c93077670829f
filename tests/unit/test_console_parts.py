"""The console's pure parts: session cookies, audit filters, charts, the health history, the
page views' paging and ordering, the live feed. The console over real etcd and a real browser:
tests/etcd/test_console.py and tests/etcd/test_console_browser.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from configsvc.audit import HistoryItem
from configsvc.console.auth import safe_next
from configsvc.console.charts import format_value, sparkline
from configsvc.console.feed import OVERVIEW, Feed
from configsvc.console.filters import AuditFilter, page_number
from configsvc.console.history import SERIES, History
from configsvc.console.session import Sessions
from configsvc.console.views import (
    PAGE_SIZE,
    fleet_of,
    roles,
    shown_series,
    sidecar_rows,
    split_checks,
)
from configsvc.errors import InvalidRequest
from configsvc.health import SidecarBeat
from configsvc.http import Role, TokenEntry, token_digest
from configsvc.rollouts import WatchedRoute
from holdfast.keyspace import AuditEntry, Route, Shadow

SECRET = b"k" * 32
ALICE = TokenEntry("alice", Role.VIEWER, token_digest("alice-token"))
BOB = TokenEntry("bob", Role.OPERATOR, token_digest("bob-token"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_names_its_token_by_a_keyed_fingerprint_and_follows_the_token_book() -> None:
    clock = Clock()
    sessions = Sessions((ALICE, BOB), SECRET, ttl_s=60, clock=clock)
    assert sessions.issue("wrong") is None and sessions.issue("") is None
    assert sessions.issue("x" * 5000) is None
    issued = sessions.issue("alice-token")
    assert issued is not None
    cookie, identity = issued
    assert (identity.subject, identity.role) == ("alice", Role.VIEWER)
    assert "alice-token" not in cookie and "alice" not in cookie
    assert sessions.identity(cookie) == identity
    # the role is the token book's now, not the cookie's: a promotion shows at once ...
    promoted = TokenEntry("alice", Role.ADMIN, ALICE.digest)
    assert Sessions((promoted,), SECRET, clock=clock).identity(cookie).role == Role.ADMIN  # type: ignore[union-attr]
    # ... and a token taken out of the book signs its sessions out
    assert Sessions((BOB,), SECRET, clock=clock).identity(cookie) is None
    # another secret (another configsvc without $HOLDFAST_CONSOLE_SECRET) knows none of them
    assert Sessions((ALICE, BOB), b"z" * 32, clock=clock).identity(cookie) is None
    payload, mac = cookie.split(".")
    for forged in (f"{payload}.{mac[:-2]}AA", f"{payload[:-2]}AA.{mac}", cookie + ".x", "", "."):
        assert sessions.identity(forged) is None
    clock.now += 61
    assert sessions.identity(cookie) is None  # expired
    with pytest.raises(ValueError, match="32 bytes"):
        Sessions((), b"short")


def test_after_sign_in_only_a_console_path() -> None:
    assert safe_next("/ui/agents/support?x=1") == "/ui/agents/support?x=1"
    for bad in (None, "", "https://evil.example/ui", "//evil.example/ui", "/v1/flags", "/ui\\x"):
        assert safe_next(bad) == "/ui"


def item(revision: int, action: str, actor: str, at: float, agent: str = "") -> HistoryItem:
    extra = {"agent": agent} if agent else {}
    return HistoryItem(revision, AuditEntry(actor=actor, action=action, target="t", at=at,
                                            extra=extra))  # fmt: skip


def test_audit_filters_parse_match_and_page() -> None:
    f = AuditFilter.parse({"actor": "ALICE", "kind": "rollout", "agent": "support",
                           "since": "1970-01-01T00:16:40", "until": "2000"})  # fmt: skip
    assert (f.since, f.until) == (1000.0, 2000.0)
    assert f.matches(item(5, "rollout.abort", "token:alice", 1500, "support"))
    assert not f.matches(item(5, "rollouts.x", "token:alice", 1500, "support"))  # not a family
    assert not f.matches(item(5, "rollout.abort", "token:bob", 1500, "support"))
    assert not f.matches(item(5, "rollout.abort", "token:alice", 999, "support"))
    assert not f.matches(item(5, "rollout.abort", "token:alice", 1500, "other"))
    assert f.query(42) == {"actor": "ALICE", "kind": "rollout", "agent": "support",
                           "since": "1970-01-01T00:16:40", "until": "1970-01-01T00:33:20",
                           "before": "42"}  # fmt: skip
    assert AuditFilter.parse(f.query(42)).before == 42
    for bad in ({"kind": "Rollout!"}, {"agent": "no spaces"}, {"since": "yesterday"},
                {"before": "-1"}, {"since": "3000", "until": "2000"}, {"nope": "1"},
                {"actor": "x" * 200}, {"actor": "a\x00b"}, {"since": "nan"},
                {"until": "1e400"}, {"since": "-5"}):  # fmt: skip
        with pytest.raises(InvalidRequest):
            AuditFilter.parse(bad)
    assert page_number({}) == 1 and page_number({"page": "3"}) == 3
    for bad_page in ("0", "-1", "x", "99999"):
        with pytest.raises(InvalidRequest):
            page_number({"page": bad_page})


def test_sparklines_break_at_gaps_and_escape_their_label() -> None:
    svg = str(sparkline([1.0, 2.0, None, 3.0, 4.0], unit="count", label="<b>r1</b>"))
    assert svg.count("<polyline") == 2  # the gap splits the line
    assert "<b>" not in svg and "&lt;b&gt;r1&lt;/b&gt;: 4" in svg
    assert str(sparkline([None, 0.5, None], unit="rate", label="e")).count("<circle") == 1
    assert "<polyline" not in str(sparkline([], unit="ms", label="empty"))
    assert format_value(None, "ms") == "\u2013"
    assert format_value(0.0123, "rate") == "1.23%"
    assert format_value(1234.4, "ms") == "1,234 ms"
    assert format_value(0.5, "usd") == "$0.5000"
    assert format_value(25000, "count") == "25.0k"


def test_history_is_bounded_aligned_and_forgets_agents() -> None:
    h = History(points=3)
    for i in range(5):
        h.record("a", float(i), {"r1": {"requests": i}} | ({"r2": {"requests": 1}} if i else {}))
    assert h.times("a") == [2.0, 3.0, 4.0]
    assert h.series("a", "r1", "requests") == [2, 3, 4]
    assert h.series("a", "r3", "requests") == [None, None, None]
    h.record("b", 0.0, {})
    h.forget(["b"])
    assert h.times("a") == [] and h.times("b") == [0.0]


def beat(i: int, revision: int, at: float) -> SidecarBeat:
    return SidecarBeat(f"s{i:04d}", "support", at, 0.0, revision, 2, 1)


def test_sidecars_come_a_page_at_a_time_the_most_troubled_first() -> None:
    now = 10_000.0
    route = WatchedRoute(Route(agent="support", stable="r1"), mod_revision=100)
    beats = [beat(i, 50 if i % 100 == 7 else 200, now - (i % 3)) for i in range(1000)]
    beats.append(beat(1000, 300, now - 60))  # quiet
    rows, pages = sidecar_rows(beats, route, now, 1)
    assert pages == 21 and len(rows) == PAGE_SIZE
    assert [r["behind"] for r in rows[:10]] == [True] * 10 and not rows[10]["behind"]
    assert rows[10]["quiet"] and rows[10]["id"] == "s1000"  # then the longest silent
    last, _ = sidecar_rows(beats, route, now, 21)
    assert len(last) == 1001 - 20 * PAGE_SIZE
    assert sidecar_rows(beats, route, now, 22)[0] == []
    fleet = fleet_of(beats, route, now)
    assert (fleet.total, fleet.behind, fleet.quiet) == (1001, 10, 1)
    assert (fleet.revision_min, fleet.revision_max, fleet.pins_cached) == (50, 300, 2002)


def test_roles_checks_and_series_shown() -> None:
    route = Route(agent="a", stable="r1", canary="r2", canary_percent=5.0,
                  shadow=Shadow(release="r3", percent=10.0, since=1.0))  # fmt: skip
    assert roles(route) == {"r1": "stable", "r2": "canary", "r3": "shadow"}
    checks = [
        {"gate": "max_p95_ratio", "scope": "billing", "verdict": "inconclusive"},
        {"gate": "max_error_rate_delta", "scope": "overall", "verdict": "pass"},
        {"gate": "max_error_rate_delta", "scope": "billing", "verdict": "fail"},
    ]
    first, rest = split_checks(checks)
    assert [(c["scope"], c["verdict"]) for c in first] == [("billing", "fail"), ("overall", "pass")]
    assert [c["unit"] for c in first] == ["rate", "rate"] and len(rest) == 1
    idle = {"series": {key: [None] for key in SERIES}, "latest": {}}
    busy = {"series": {**{key: [None] for key in SERIES}, "requests": [None, 3]},
            "latest": {"error_rate": 0.0}}  # fmt: skip
    assert shown_series([idle]) == []
    assert shown_series([idle, busy]) == ["requests", "error_rate"]


async def test_the_feed_wakes_viewers_of_what_changed_and_ends_them_on_close() -> None:
    feed = Feed()
    waiter = asyncio.create_task(feed.wait("support", 0, keepalive=5.0))
    overview = asyncio.create_task(feed.wait(OVERVIEW, 0, keepalive=5.0))
    await asyncio.sleep(0)
    feed.bump(["other"])
    assert await overview == 1
    await asyncio.sleep(0)
    assert not waiter.done()  # another agent's change does not wake this page
    feed.bump(["support"])
    assert await waiter == 2
    started = time.monotonic()
    assert await feed.wait("support", 2, keepalive=0.05) is None  # a keep-alive
    assert time.monotonic() - started < 1
    late = asyncio.create_task(feed.wait("support", 2, keepalive=30.0))
    await asyncio.sleep(0)
    feed.close()
    assert await late is None
