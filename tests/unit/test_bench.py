"""The benchmark harness's pure parts: HTTP framing, percentiles, profile grouping.

Nothing here times anything: the benchmark itself reports figures, it never asserts them.
"""

from __future__ import annotations

import math

import pytest

from bench.http1 import ProtocolError, ResponseParser, Target
from bench.profile import SERVER_AND_LOOP, hotspots
from bench.report import END, START, merge_into
from bench.stats import percentile


def feed_bytewise(parser: ResponseParser, data: bytes) -> bool:
    done = False
    for i in range(len(data)):
        done = parser.feed(data[i : i + 1], float(i))
    return done


def test_content_length_response_completes_only_at_its_last_byte() -> None:
    parser = ResponseParser()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n"
    assert not parser.feed(head + b"abc", 1.0)
    assert parser.feed(b"de", 2.0)
    assert (parser.status, parser.body_bytes, parser.first_byte) == (200, 5, 1.0)


def test_chunked_sse_counts_events_and_chunks_across_splits() -> None:
    events = [b'data: {"n":1}\n\n', b'data: {"n":2}\n\ndata: [DONE]\n\n']
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    parser = ResponseParser()
    assert feed_bytewise(parser, head + body)
    assert (parser.events, parser.chunks) == (3, 2)
    assert parser.body_bytes == sum(len(e) for e in events)


def test_parser_is_reusable_on_a_keep_alive_connection() -> None:
    parser = ResponseParser()
    reply = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert parser.feed(reply, 0.0)
    parser.reset()
    assert parser.feed(reply, 0.0)
    assert parser.status == 404


def test_unframed_response_is_refused() -> None:
    with pytest.raises(ProtocolError):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\n\r\n", 0.0)


def test_target_encodes_a_post_with_its_length() -> None:
    target = Target.chat("http://127.0.0.1:9900", {"model": "m"})
    raw = target.encode()
    assert raw.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert raw.endswith(b'\r\n\r\n{"model":"m"}')
    assert b"Content-Length: 13\r\n" in raw


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0,
        99.0,
        100.0,
    )
    assert math.isnan(percentile([], 50))


def test_hotspots_charge_samples_to_our_deepest_frame() -> None:
    collapsed = "\n".join(
        [
            "<module> (holdfast-sidecar:6);main (sidecar/main.py:66);Runner.run (asyncio/"
            "runners.py:118);_forward (sidecar/openai_api.py:9);dumps (json/__init__.py:1) 3",
            "<module> (holdfast-sidecar:6);main (sidecar/main.py:66);Runner.run (asyncio/"
            "runners.py:118);RequestHandler.start (aiohttp/web_protocol.py:5) 1",
            "Thread._bootstrap (threading.py:1);_worker (concurrent/futures/thread.py:2) 50",
        ]
    )
    total, spots = hotspots(collapsed)
    assert total == 4
    assert spots[0].frame == "_forward (sidecar/openai_api.py)"
    assert spots[0].share == 0.75
    assert spots[0].callees == (("dumps", 0.75),)
    assert spots[1].frame == SERVER_AND_LOOP
    assert spots[1].callees == (("RequestHandler.start", 0.25),)


def test_results_merge_keeps_other_tools_sections() -> None:
    ours = f"{START}\n## Sidecar overhead\nnew\n{END}"
    theirs = "<!-- watch-fanout:start -->\n## Watch\nrows\n<!-- watch-fanout:end -->"
    first = merge_into(f"# Benchmark results\n\nstale unmarked text\n\n{theirs}\n", ours)
    assert first.index(ours) < first.index(theirs)
    assert "stale unmarked text" not in first
    again = merge_into(first.replace("new", "old"), ours)
    assert again == first
    assert merge_into(None, ours) == f"# Benchmark results\n\n{ours}\n"
