"""Provider kinds: their headers, the release record's ``provider``/``api_version`` (and records
written before them), the refusal of a release that cannot serve a request at request time
(routing) and of one that cannot serve the agent's traffic at change time (configsvc), and the
dialect's session header. Pure."""

from __future__ import annotations

from collections import Counter

import msgpack
import pytest

from configsvc.errors import InvalidRequest, ProviderMismatch
from configsvc.releases.payloads import NewRelease
from configsvc.releases.providers import checker, migration_mismatch, mismatch
from holdfast.keyspace import Keyspace, RecordError, Release, Route, Shadow
from holdfast.keyspace.codec import KIND_FIELD, VERSION_FIELD
from holdfast.providers import PROVIDERS, provider
from holdfast.store import KeyValue
from holdfast.translate import kinds_serving, traffic_keys
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


def test_routing_refuses_a_release_that_serves_the_dialect_in_no_way() -> None:
    config = snapshot_with(release("o1"), release("a1", "anthropic"), stable="o1")
    chat = kinds_serving("openai.chat")  # natively or translated
    assert chat == {"openai", "anthropic", "openai-chat"}
    assert resolve(config.current, "a", "a", None, speaks=chat).release.name == "o1"
    counting = kinds_serving("anthropic.count_tokens")
    assert counting == {"anthropic"}
    with pytest.raises(DialectNotServed, match="'o1', whose provider is openai") as info:
        resolve(config.current, "a", "a", "s1", speaks=counting)
    assert "--provider anthropic" in str(info.value)


def test_session_header_of_the_dialect_then_the_body_hint() -> None:
    claude = ("X-Claude-Code-Session-Id",)
    assert session_id({"X-Claude-Code-Session-Id": "abc-1"}, "user", claude) == "abc-1"
    both = {"X-Holdfast-Session": "ours", "X-Claude-Code-Session-Id": "x"}
    assert session_id(both, None, claude) == "ours"
    assert session_id({}, "user-7", claude) == "user-7"
    hashed = session_id({"X-Claude-Code-Session-Id": "not an id!"}, None, claude)
    assert hashed is not None and hashed.startswith("u-")
    assert session_id({"X-Claude-Code-Session-Id": "abc"}, None) is None  # not this dialect's


def test_configsvc_refuses_a_release_that_cannot_serve_the_agents_traffic() -> None:
    o1, a1, c1 = release("o1"), release("a1", "anthropic"), release("c1", "openai-chat")
    route = Route(agent="a", stable="o1", shadow=Shadow(release="o1", percent=5, since=1))
    # nothing known yet: nothing refused (each request is judged where it is served)
    assert mismatch(a1, "canary", {}) == ""
    plain = {"openai.chat": 40, "openai.chat:tools": 12, "openai.chat:stream": 30}
    assert mismatch(a1, "canary", plain) == ""  # all of it translates into Messages
    uses_n = {**plain, "openai.chat:n": 3}
    problem = mismatch(a1, "stable", uses_n)
    assert problem.startswith("release 'a1' (anthropic) as stable would fail requests")
    assert "3 of the agent's openai.chat requests asked for more than one choice" in problem
    assert "--allow-provider-change" in problem
    assert mismatch(o1, "canary", uses_n) == ""  # served natively
    embeds = {"openai.embeddings": 5}
    assert "serve neither natively nor through a translation" in mismatch(a1, "shadow", embeds)
    assert mismatch(c1, "shadow", embeds) == ""
    stateful = {"openai.responses": 9, "openai.responses:state": 2}
    assert "provider-held state" in mismatch(c1, "canary", stateful)
    with pytest.raises(ProviderMismatch):
        checker(uses_n, a1, "stable", allow=False)(route)
    checker(uses_n, a1, "stable", allow=True)(route)
    assert "--allow-provider-change" in migration_mismatch(o1, a1, uses_n)
    assert migration_mismatch(o1, a1, plain) == ""
    assert migration_mismatch(o1, release("o2"), uses_n) == ""  # the same kind: as before


def test_traffic_counts_fields_no_translation_knows_and_configsvc_refuses_them() -> None:
    claude_code = {
        "model": "m", "max_tokens": 9, "messages": [], "stream": True,
        "thinking": {"type": "adaptive", "display": "omitted"}, "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    }  # fmt: skip
    keys = traffic_keys("anthropic.messages", claude_code)
    assert keys == ["anthropic.messages:stream", "anthropic.messages"]  # all of it translates
    newer = traffic_keys("anthropic.messages", {**claude_code, "speed": "fast"})
    assert "anthropic.messages:unknown_field" in newer
    traffic = Counter([*keys, *newer, *newer])
    problem = mismatch(release("o1"), "canary", dict(traffic))
    assert "2 of the agent's anthropic.messages requests carried a field the translation" in (
        problem
    )
    assert mismatch(release("a1", "anthropic"), "canary", dict(traffic)) == ""  # native
    assert traffic_keys("openai.embeddings", {"model": "m", "input": "x", "new": 1}) == [
        "openai.embeddings"
    ]  # no translation of it exists: nothing to judge a field by
