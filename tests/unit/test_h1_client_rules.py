"""The provider client's pure parts: framing decisions, reuse rules, the idle pool, request
heads, header lookups, the deadline sweeper and the body buffer (no sockets, no event loop)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from sidecar.upstream.h1.body import HIGH_WATER, Body
from sidecar.upstream.h1.deadlines import Sweeper
from sidecar.upstream.h1.framing import Framing, body_framing, expired, may_reuse
from sidecar.upstream.h1.headers import Headers
from sidecar.upstream.h1.pool import IdlePool
from sidecar.upstream.h1.request import BadTarget, Target, encode_head


@pytest.mark.parametrize(
    ("status", "te", "cl", "framing"),
    [
        (200, [], ["12"], Framing.LENGTH),
        (200, ["chunked"], [], Framing.CHUNKED),
        (200, ["gzip, chunked"], [], Framing.CHUNKED),
        (200, ["gzip", "Chunked"], [], Framing.CHUNKED),  # repeated fields combine
        (200, ["chunked, gzip"], [], Framing.UNTIL_CLOSE),  # chunked not last: until close
        (200, ["gzip"], [], Framing.UNTIL_CLOSE),
        (200, [], [], Framing.UNTIL_CLOSE),  # neither: the connection's end
        (204, [], ["5"], Framing.NONE),
        (304, ["chunked"], [], Framing.NONE),
        (100, [], [], Framing.NONE),
        (103, [], [], Framing.NONE),
        (404, [], ["0"], Framing.LENGTH),
    ],
)
def test_body_framing(status: int, te: list[str], cl: list[str], framing: Framing) -> None:
    assert body_framing(status, te, cl) is framing


CLEAN: dict[str, Any] = {
    "complete": True,
    "keep_alive": True,
    "framing": Framing.LENGTH,
    "half_closed": False,
    "unsent": 0,
    "failed": False,
}


def test_a_clean_finished_answer_is_reusable() -> None:
    assert may_reuse(**CLEAN)
    assert may_reuse(**(CLEAN | {"framing": Framing.CHUNKED}))
    assert may_reuse(**(CLEAN | {"framing": Framing.NONE}))


@pytest.mark.parametrize(
    "spoilt",
    [
        {"complete": False},  # half-read: the rest would arrive as the next answer
        {"keep_alive": False},  # Connection: close, HTTP/1.0
        {"framing": Framing.UNTIL_CLOSE},  # its end was the connection's end
        {"half_closed": True},  # after a hang-up
        {"unsent": 10},  # the provider answered before the request body was sent
        {"failed": True},  # cut, timed out, malformed
    ],
)
def test_anything_else_closes_the_connection(spoilt: dict[str, Any]) -> None:
    assert not may_reuse(**(CLEAN | spoilt))


def test_idle_expiry() -> None:
    assert not expired(100.0, 114.9, 15.0)
    assert expired(100.0, 115.0, 15.0)


@dataclass(eq=False)
class FakeConn:
    name: str
    alive: bool = True
    idle_since: float = 0.0

    def usable(self) -> bool:
        return self.alive


def test_pool_takes_the_newest_live_connection_of_its_key() -> None:
    pool: IdlePool[FakeConn] = IdlePool(keepalive=15.0)
    key, other = ("http", "a", 80), ("https", "a", 443)
    old, dead, new = FakeConn("old"), FakeConn("dead"), FakeConn("new")
    assert pool.put(key, old, 0.0) and pool.put(key, dead, 1.0) and pool.put(key, new, 2.0)
    assert pool.take(other, 3.0) is None  # scheme and port are part of the key
    assert pool.take(key, 3.0) is new
    dead.alive = False  # closed by the provider while idle
    assert pool.take(key, 3.0) is old and pool.stale == [dead]
    assert pool.take(key, 3.0) is None


def test_pool_never_hands_out_an_expired_connection() -> None:
    pool: IdlePool[FakeConn] = IdlePool(keepalive=15.0)
    key = ("http", "a", 80)
    stale = FakeConn("stale")
    pool.put(key, stale, 0.0)
    assert pool.take(key, 15.0) is None and pool.stale == [stale]


def test_pool_expiry_sweep_and_bound() -> None:
    pool: IdlePool[FakeConn] = IdlePool(keepalive=10.0, max_idle=2)
    key = ("http", "a", 80)
    a, b, c = FakeConn("a"), FakeConn("b"), FakeConn("c")
    assert pool.put(key, a, 0.0) and pool.put(key, b, 5.0)
    assert not pool.put(key, c, 6.0)  # over the bound: the caller closes it
    assert pool.expire(9.0) == ([], 10.0)
    assert pool.expire(10.0) == ([a], 15.0)
    b.alive = False
    assert pool.expire(11.0) == ([b], math.inf)
    assert len(pool) == 0


def test_target_parse() -> None:
    t = Target.parse("https://API.Example.com/v1/chat/completions?x=1")
    assert t.key == ("https", "api.example.com", 443) and t.tls
    assert (t.path, t.host_header) == ("/v1/chat/completions?x=1", "api.example.com")
    t = Target.parse("http://127.0.0.1:8080/v1")
    assert (t.host, t.port, t.host_header, t.tls) == ("127.0.0.1", 8080, "127.0.0.1:8080", False)
    t = Target.parse("http://[::1]:9/v1")
    assert (t.host, t.host_header) == ("::1", "[::1]:9")
    assert Target.parse("https://bücher.example/v1").host == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    "url", ["ftp://a/v1", "http:///v1", "http://a:99999/v1", "http://u:p@a/v1", "unix:/x"]
)
def test_bad_targets(url: str) -> None:
    with pytest.raises(BadTarget):
        Target.parse(url)


def test_request_head() -> None:
    t = Target.parse("http://127.0.0.1:8080/v1/chat/completions")
    head = encode_head("POST", t, {"Content-Type": "application/json", "X-Request-Id": "r1"}, 7)
    assert head == (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Content-Type: application/json\r\nX-Request-Id: r1\r\nContent-Length: 7\r\n\r\n"
    )
    # No body on a GET or DELETE: no Content-Length; a POST without one says 0.
    assert b"Content-Length" not in encode_head("GET", t, {}, 0)
    assert b"Content-Length: 0\r\n" in encode_head("POST", t, {}, 0)
    assert "é".encode() in encode_head("GET", t, {"X-Request-Id": "é"}, 0)  # as aiohttp: UTF-8


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Request-Id": "a\r\nX-Injected: 1"},
        {"X-Request-Id": "a\nb"},
        {"X-Request-Id": "a\rb"},
        {"Bad Name": "v"},
        {"": "v"},
        {"X-Ok:": "v"},
    ],
)
def test_request_head_refuses_what_would_break_framing(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"line break|HTTP token"):
        encode_head("POST", Target.parse("http://a/v1"), headers, 0)


def test_headers_lookup_is_case_insensitive_and_keeps_names() -> None:
    h = Headers()
    h.add("Content-Type", "text/event-stream")
    h.add("X-RateLimit-Remaining", "9")
    h.add("content-type", "text/plain")  # a second field of one name: the first wins
    assert h.get("content-type") == "text/event-stream" == h["CONTENT-TYPE"]
    assert h.get("missing") is None and h.get("missing", "d") == "d"
    assert "x-ratelimit-remaining" in h and "nope" not in h
    assert ("X-RateLimit-Remaining", "9") in h.items()
    assert "text/event-stream" not in repr(h)  # values may echo secrets


@dataclass(eq=False)
class Call:
    deadline: float
    expired: bool = False

    def expire(self) -> None:
        self.expired = True


@dataclass
class FakeLoop:
    """Time and timers by hand."""

    now: float = 0.0
    timers: list[tuple[float, Any]] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> Any:
        handle = FakeHandle(when, callback)
        self.timers.append((when, handle))
        return handle

    def run_until(self, t: float) -> None:
        self.now = t
        for when, handle in sorted(self.timers, key=lambda x: x[0]):
            if when <= t and not handle.cancelled:
                handle.cancelled = True
                handle.callback()

    @property
    def armed(self) -> list[float]:
        return [when for when, h in self.timers if not h.cancelled]


@dataclass
class FakeHandle:
    when: float
    callback: Any
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


def test_sweeper_arms_one_timer_and_expires_only_what_is_due() -> None:
    loop = FakeLoop()
    sweeper: Sweeper[Call] = Sweeper(loop)  # type: ignore[arg-type]
    slow, fast, later = Call(300.0), Call(5.0), Call(400.0)
    sweeper.add(slow)
    sweeper.add(later)  # later than the armed time: no new timer
    assert loop.armed == [300.0]
    sweeper.add(fast)  # earlier: re-armed
    assert loop.armed == [5.0]
    fast.deadline = 50.0  # a stream's idle deadline moving forward: just a store
    loop.run_until(5.0)
    assert not fast.expired and loop.armed == [50.0]  # re-armed at the earliest left
    sweeper.discard(fast)  # answered: the timer fires once for nothing
    loop.run_until(50.0)
    assert loop.armed == [300.0]
    loop.run_until(300.0)
    assert slow.expired and not later.expired and len(sweeper) == 1
    later.deadline = 10.0  # moved earlier than the armed time: the sweeper is told
    sweeper.moved(later)
    assert loop.armed == [10.0]


class Flow:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pause(self) -> None:
        self.paused += 1

    def resume(self) -> None:
        self.resumed += 1


def test_body_buffer_semantics() -> None:
    flow = Flow()
    body = Body(flow)
    assert body.read_nowait() == b"" and not body.at_eof()
    body.feed(b"ab")
    body.feed(b"cd")
    assert body.read_nowait() == b"abcd"
    body.feed(b"x" * (HIGH_WATER + 1))  # an agent slower than its provider: stop reading
    assert flow.paused == 1
    assert len(body.read_nowait()) == HIGH_WATER + 1 and flow.resumed == 1
    body.feed(b"tail")
    body.feed_eof()
    assert body.complete and not body.at_eof()  # arrived, not read
    assert body.read_nowait() == b"tail" and body.at_eof()
    body.set_exception(ConnectionError("cut"))
    with pytest.raises(ConnectionError):  # an exception wins over anything buffered
        body.read_nowait()
    assert body.failed
