"""configsvc request parsing and validation: pure, no event loop."""

from __future__ import annotations

import json
from typing import Any

import pytest

from configsvc.errors import InvalidRequest
from configsvc.http.payloads import HistoryQuery, parse_object
from configsvc.releases.payloads import MAX_ALIASES, NewRelease, Rollback, SetAliases, SetStable
from holdfast.keyspace.fields import MAX_TEXT


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


GOOD_RELEASE = {"release": "r1", "model": "gpt-4o-mini", "base_url": "https://api.example/v1/"}


def test_new_release_parses_and_normalizes() -> None:
    req = NewRelease.parse(body(**GOOD_RELEASE, api_key_env="OPENAI_KEY", reason="why"))
    assert req.release == "r1"
    assert req.base_url == "https://api.example/v1"  # trailing slash dropped, as the record does
    assert (req.api_key_env, req.provider, req.reason) == ("OPENAI_KEY", "openai", "why")


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"", "must be a JSON object"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not list"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_bodies_are_refused(raw: bytes, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        NewRelease.parse(raw)


def test_unknown_fields_are_named() -> None:
    with pytest.raises(InvalidRequest) as err:
        NewRelease.parse(body(**GOOD_RELEASE, relase="r2", colour="blue"))
    assert "colour, relase" in err.value.message
    assert err.value.param == "colour"


@pytest.mark.parametrize(
    ("field", "bad", "needle"),
    [
        ("release", "R1", "invalid release"),
        ("release", "a/b", "invalid release"),
        ("release", "", "must not be empty"),
        ("model", "has space", "invalid model"),
        ("base_url", "ftp://x", "invalid base URL"),
        ("base_url", "https://u:p@host/v1", "credentials"),
        ("base_url", "https://host:99999/v1", "invalid base URL"),
        ("api_key_env", "lower-case", "environment variable"),
        ("provider", "gemini", "unsupported provider"),
        ("description", "x" * (MAX_TEXT + 1), "longer than"),
        ("model", 5, "must be a string"),
    ],
)
def test_new_release_field_errors_name_the_field(field: str, bad: Any, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle) as err:
        NewRelease.parse(body(**{**GOOD_RELEASE, field: bad}))
    assert err.value.param == field


def test_new_release_missing_field() -> None:
    with pytest.raises(InvalidRequest, match="'model' is required"):
        NewRelease.parse(body(release="r1", base_url="http://h/v1"))


def test_set_stable() -> None:
    assert SetStable.parse(body(release="r2")) == SetStable(release="r2")
    req = SetStable.parse(body(release="r2", reason="go", if_revision=0))
    assert (req.if_revision, req.reason) == (0, "go")
    assert SetStable.parse(body(release="r2", if_revision=None)).if_revision is None


@pytest.mark.parametrize("bad", [-1, 1.5, "7", True])
def test_set_stable_if_revision_must_be_a_revision(bad: Any) -> None:
    with pytest.raises(InvalidRequest, match="if_revision") as err:
        SetStable.parse(body(release="r2", if_revision=bad))
    assert err.value.param == "if_revision"


def test_rollback_body_is_optional() -> None:
    assert Rollback.parse(b"") == Rollback()
    assert Rollback.parse(body(reason="bad canary")).reason == "bad canary"
    with pytest.raises(InvalidRequest, match="unknown field"):
        Rollback.parse(body(release="r1"))


def test_aliases_validated_and_deduplicated() -> None:
    req = SetAliases.parse(body(aliases=["gpt-4o", "helper", "gpt-4o"]))
    assert req.aliases == ("gpt-4o", "helper")
    assert SetAliases.parse(body(aliases=[])).aliases == ()
    for bad in (["has space"], "gpt-4o", [1], None, ["x"] * (MAX_ALIASES + 1)):
        with pytest.raises(InvalidRequest) as err:
            SetAliases.parse(body(aliases=bad))
        assert err.value.param == "aliases"


def test_history_query() -> None:
    assert HistoryQuery.parse({}) == HistoryQuery(agent="", limit=50)
    assert HistoryQuery.parse({"agent": "support", "limit": "5"}) == HistoryQuery(
        agent="support", limit=5
    )
    for bad, param in (
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"agent": "Bad Agent"}, "agent"),
        ({"agnet": "support"}, "agnet"),
    ):
        with pytest.raises(InvalidRequest) as err:
            HistoryQuery.parse(bad)
        assert err.value.param == param


def test_parse_object_accepts_empty_only_when_allowed() -> None:
    assert parse_object(b"  ", frozenset(), empty_ok=True) == {}
    with pytest.raises(InvalidRequest):
        parse_object(b"  ", frozenset())
