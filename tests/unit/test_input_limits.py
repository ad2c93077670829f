"""Pure limits: JSON depth, Host header check, limit settings, request/session id hygiene."""

from __future__ import annotations

import json
import time

import pytest

from holdfast.json_limits import JsonRefused, depth_over, loads_bounded
from holdfast.logs import request_id_from
from holdfast.net.hostcheck import allowed_hosts, host_allowed
from sidecar.errors import InvalidRequest
from sidecar.pipeline.body import encode_body, parse_body
from sidecar.routing.session import session_id
from sidecar.settings.cli import load_settings
from sidecar.settings.limits import LimitsError, LimitSettings, server_options
from sidecar.settings.model import SettingsError
from sidecar.upstream.client import relayed_headers


def test_depth_limit() -> None:
    assert loads_bounded(b"[[[1]]]", 3) == [[[1]]]
    with pytest.raises(JsonRefused, match="deeper"):
        loads_bounded(b"[[[[1]]]]", 3)
    assert not depth_over({"a": [{"b": 1}]}, 3)
    assert depth_over({"a": [{"b": {}}]}, 3)


def test_hostile_json_refused_fast() -> None:
    started = time.perf_counter()
    for raw in (b"[" * 1_000_000, b'{"a":' * 200_000, b"1" * 5000, b"NaN", b"[Infinity]", b"\xff"):
        with pytest.raises(JsonRefused):
            loads_bounded(raw, 64)
    assert time.perf_counter() - started < 2.0


def test_integers_beyond_64_bits_stay_exact_and_floats_stay_finite() -> None:
    # orjson (the fast path) would read these as floats: they take the exact path instead
    for big in (-9223372036854775809, 18446744073709551616, 10**40):
        raw = b'{"model":"m","seed":%d,"n":1.5}' % big
        body = loads_bounded(raw)
        assert body["seed"] == big and isinstance(body["seed"], int)
        assert encode_body(body) == raw  # re-encoded to the same bytes
    assert loads_bounded('{"seed": -9223372036854775809}')["seed"] == -9223372036854775809
    digits_in_text = b'{"model":"m","user":"id-12345678901234567890"}'
    assert encode_body(loads_bounded(digits_in_text)) == digits_in_text
    fast = rb'{"model":"m","temperature":0.2,"max_tokens":4096,"stop":["\u00e9", "\n"]}'
    assert loads_bounded(fast) == json.loads(fast)
    long_too = b'{"t":1e999,"seed":12345678901234567890}'  # the exact path refuses it as well
    for overflow in (b'{"t":1e999}', b'{"t":-1e400}', long_too):  # never sent on as "Infinity"
        with pytest.raises(JsonRefused, match="infinity"):
            loads_bounded(overflow)


def test_parse_body_errors_are_invalid_request() -> None:
    for raw in (b"[" * 100_000, b'{"model":"m","x":' + b"[" * 100 + b"]" * 100 + b"}", b"{"):
        with pytest.raises(InvalidRequest):
            parse_body(raw, 64)
    with pytest.raises(InvalidRequest, match="surrogate"):
        encode_body(parse_body(b'{"model":"m","user":"\\ud800"}'))


def test_host_header_check() -> None:
    hosts = allowed_hosts("127.0.0.1", ["sidecar.internal"])
    for ok in (
        "127.0.0.1:8787",
        "localhost",
        "LOCALHOST:1",
        "[::1]:8787",
        "127.9.9.9",
        None,
        "sidecar.internal:8787",
    ):
        assert host_allowed(ok, hosts), ok
    for bad in (
        "evil.example",
        "evil.example:8787",
        "127.0.0.1.evil.com",
        "127.evil",
        "",
        "10.0.0.1:8787",
    ):
        assert not host_allowed(bad, hosts), bad
    assert host_allowed("10.0.0.7:80", allowed_hosts("10.0.0.7"))


def test_limit_settings_and_flags() -> None:
    opts = server_options(LimitSettings(max_headers=20, idle_timeout=3))
    assert opts["max_headers"] == 20 and opts["keepalive_timeout"] == 3
    with pytest.raises(LimitsError):
        LimitSettings(max_json_depth=1)
    with pytest.raises(LimitsError):
        LimitSettings(upstream_hosts=("not a host",))
    s = load_settings(
        [
            "--agent",
            "a",
            "--max-concurrent-requests",
            "7",
            "--allow-upstream-host",
            "*.x.com",
            "--allowed-host",
            "box",
            "--max-json-depth",
            "32",
            "--idle-timeout",
            "2",
        ],
        {},
    )
    assert s.limits.max_concurrent == 7 and s.limits.upstream_hosts == ("*.x.com",)
    assert s.limits.allowed_hosts == ("box",) and s.limits.max_json_depth == 32
    with pytest.raises(SettingsError):
        load_settings(["--agent", "a", "--max-headers", "0"], {})


def test_ids_never_carry_control_characters() -> None:
    for bad in ("abc\r\nX-Evil: 1", "a\x00b", "a\nb", "x" * 500):
        assert request_id_from(bad) != bad
    for bad in ("s\r\n1", "s\x00", "s 1"):
        with pytest.raises(InvalidRequest):
            session_id({"X-Holdfast-Session": bad}, None)
    assert session_id({}, "a\r\nb") != "a\r\nb"


def test_hop_by_hop_response_headers_not_relayed() -> None:
    upstream = {
        "Connection": "keep-alive, X-Secret",
        "Keep-Alive": "timeout=5",
        "X-Secret": "1",
        "Transfer-Encoding": "chunked",
        "Trailer": "x",
        "Upgrade": "h2c",
        "TE": "trailers",
        "Proxy-Authenticate": "Basic",
        "Proxy-Connection": "close",
        "Set-Cookie": "a=b",
        "Retry-After": "3",
        "x-ratelimit-remaining-requests": "9",
    }
    assert relayed_headers(upstream) == {"Retry-After": "3", "x-ratelimit-remaining-requests": "9"}
