"""Provider kinds: their headers, the release record's ``provider``/``api_version`` (and records
written before them), the refusal of a release of another kind at request time (routing) and at
change time (configsvc), and the dialect's session header. Pure."""

from __future__ import annotations

import msgpack
import pytest

from configsvc.errors import InvalidRequest, ProviderMismatch
from configsvc.releases.payloads import NewRelease
from configsvc.releases.providers import checker, migration_mismatch, mismatch
from holdfast.keyspace import Keyspace, RecordError, Release, Route, Shadow
from holdfast.keyspace.codec import KIND_FIELD, VERSION_FIELD
from holdfast.providers import PROVIDERS, provider
from holdfast.store import KeyValue
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState
from sidecar.errors import DialectNotServed
from sidecar.routing import resolve, session_id

KS = Keyspace("dev")


def release(name: str, kind: str = "openai", api_version: str = "") -> Release:
    return Release(
        agent="a",
        name=name,
        model="m",
        base_url="https://p.example/v1",
        provider=kind,
        api_version=api_version,
    )


def test_headers_per_kind() -> None:
    assert provider("openai").headers("sk", "", {"anthropic-beta": "x"}) == {
        "Authorization": "Bearer sk"
    }
    anthropic = PROVIDERS["anthropic"]
    assert anthropic.headers("sk", "", {}) == {
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk",
    }
    agent = {"anthropic-beta": "b1,b2", "anthropic-version": "2099-01-01", "x-api-key": "own"}
    assert anthropic.headers("sk", "2024-01-01", agent) == {
        "anthropic-beta": "b1,b2",
        "anthropic-version": "2099-01-01",  # the agent's wins over the release's
        "x-api-key": "sk",
    }
    assert anthropic.headers("", "2024-01-01", {})["anthropic-version"] == "2024-01-01"
    body = anthropic.one_turn("m", "sys", "hi", 8, temperature=0)
    assert body["system"] == "sys" and body["messages"] == [{"role": "user", "content": "hi"}]
    body = provider("openai").one_turn("m", "sys", "hi", 8, temperature=None)
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    assert "temperature" not in body


def test_release_record_kind_version_and_old_records() -> None:
    r = release("a1", "anthropic", api_version="2023-06-01")
    assert Release.decode(r.encode()) == r and r.public()["api_version"] == "2023-06-01"
    plain = release("o1")
    assert "api_version" not in msgpack.unpackb(plain.encode())  # written only when set
    old = {VERSION_FIELD: 1, KIND_FIELD: "release", "agent": "a", "name": "x", "model": "m",
           "base_url": "https://p/v1", "created_at": 0.0}  # fmt: skip
    decoded = Release.decode(msgpack.packb(old))
    assert decoded.provider == "openai" and decoded.api_version == ""
    with pytest.raises(RecordError, match="takes no API version"):
        release("o2", api_version="2023-06-01")
    with pytest.raises(RecordError, match="invalid API version"):
        release("a2", "anthropic", api_version="2023 06 01")
    with pytest.raises(RecordError, match="unsupported provider"):
        release("g", "gemini")


def test_new_release_payload_takes_kind_and_version() -> None:
    body = b'{"release": "a1", "model": "claude", "base_url": "https://x/v1", ' \
           b'"provider": "anthropic", "api_version": "2023-06-01"}'  # fmt: skip
    parsed = NewRelease.parse(body)
    assert parsed.provider == "anthropic" and parsed.api_version == "2023-06-01"
    with pytest.raises(InvalidRequest) as info:
        NewRelease.parse(body.replace(b'"anthropic"', b'"openai"'))
    assert info.value.param == "api_version"


def snapshot_with(*releases: Release, stable: str) -> ConfigState:
    config = ConfigState(KS, "a", kinds=CONFIG_KINDS)
    kvs = {KS.release("a", r.name): r.encode() for r in releases}
    kvs[KS.route("a")] = Route(agent="a", stable=stable).encode()
    config.apply_reset(1, {k: KeyValue(k, v, 1, 1, 1) for k, v in kvs.items()}, "etcd")
    return config


def test_routing_refuses_a_release_that_does_not_speak_the_dialect() -> None:
    config = snapshot_with(release("o1"), release("a1", "anthropic"), stable="o1")
    assert resolve(config.current, "a", "a", None, speaks="openai").release.name == "o1"
    with pytest.raises(DialectNotServed, match="'o1', whose provider is openai"):
        resolve(config.current, "a", "a", "s1", speaks="anthropic")


def test_session_header_of_the_dialect_then_the_body_hint() -> None:
    claude = ("X-Claude-Code-Session-Id",)
    assert session_id({"X-Claude-Code-Session-Id": "abc-1"}, "user", claude) == "abc-1"
    both = {"X-Holdfast-Session": "ours", "X-Claude-Code-Session-Id": "x"}
    assert session_id(both, None, claude) == "ours"
    assert session_id({}, "user-7", claude) == "user-7"
    hashed = session_id({"X-Claude-Code-Session-Id": "not an id!"}, None, claude)
    assert hashed is not None and hashed.startswith("u-")
    assert session_id({"X-Claude-Code-Session-Id": "abc"}, None) is None  # not this dialect's


def test_configsvc_refuses_mixing_kinds_on_a_route_unless_allowed() -> None:
    o1, o2 = release("o1"), release("o2")
    a1, a2 = release("a1", "anthropic"), release("a2", "anthropic")
    known = {r.name: r for r in (o1, o2, a1, a2)}
    route = Route(agent="a", stable="o1", shadow=Shadow(release="o2", percent=5, since=1))
    assert mismatch(route, a1, "canary", known).startswith("release 'a1' (anthropic) would be")
    assert "stable release 'o1' is openai" in mismatch(route, a1, "stable", known)
    assert mismatch(route, o2, "canary", known) == ""
    assert mismatch(None, a1, "stable", known) == ""
    assert "shadow release 'o2'" in mismatch(Route(agent="a", stable="a1", shadow=route.shadow),
                                             a2, "canary", known)  # fmt: skip
    # a role placed anew replaces its holder: a canary of another kind is replaced, not compared
    mixed = Route(agent="a", stable="a1", canary="o1", canary_percent=5)
    assert mismatch(mixed, a2, "canary", known) == ""
    with pytest.raises(ProviderMismatch):
        checker(known, a1, "stable", allow=False)(route)
    checker(known, a1, "stable", allow=True)(route)
    assert "--allow-provider-change" in migration_mismatch(a1, o1)
    assert migration_mismatch(a1, a2) == ""
