"""Keyspace and record codec: pure, no event loop."""

from __future__ import annotations

import msgpack
import pytest

from holdfast.keyspace import (
    MAX_RECORD_BYTES,
    AuditEntry,
    KeyError_,
    Keyspace,
    RecordError,
    Release,
    Route,
    decode_record,
    encode_record,
)

KS = Keyspace("dev")


def release(**over: object) -> Release:
    fields: dict[str, object] = {
        "agent": "support",
        "name": "r1",
        "model": "gpt-4o-mini",
        "base_url": "http://127.0.0.1:9900/v1/",
    }
    fields.update(over)
    return Release(**fields)  # type: ignore[arg-type]


def test_keys_match_design_table() -> None:
    assert KS.flag("dark-mode") == "/holdfast/dev/flags/dark-mode"
    assert KS.release("support", "r1") == "/holdfast/dev/releases/support/r1"
    assert KS.route("support") == "/holdfast/dev/routes/support"
    assert KS.prompt("greet", "v2") == "/holdfast/dev/prompts/greet/v2"
    assert KS.contract("search", "1.2.0") == "/holdfast/dev/contracts/search/1.2.0"
    assert KS.budget("tenant:acme") == "/holdfast/dev/budgets/tenant:acme"
    assert KS.pin("support", "Sess-1") == "/holdfast/dev/pins/support/Sess-1"
    assert KS.health("host-12") == "/holdfast/dev/health/host-12"
    assert KS.audit(42) == "/holdfast/dev/audit/00000000000000000042"


def test_audit_keys_sort_by_revision() -> None:
    revisions = [5, 40, 300, 2, 10_000]
    assert sorted(KS.audit(r) for r in revisions) == [KS.audit(r) for r in sorted(revisions)]


@pytest.mark.parametrize(
    "bad", ["", "UPPER", "has/slash", "-leading", "x" * 64, "sp ace", "dot\x00"]
)
def test_names_are_validated(bad: str) -> None:
    with pytest.raises(KeyError_):
        KS.release("support", bad)


def test_parse_round_trip_and_rejects_foreign_keys() -> None:
    parsed = KS.parse(KS.release("support", "r1"))
    assert (parsed.kind, parsed.parts) == ("releases", ("support", "r1"))
    assert KS.parse(KS.audit_pending("abc")).kind == "audit_pending"
    for key in ("/holdfast/prod/routes/a", "/holdfast/dev/nope/a", "/holdfast/dev/routes/a/b"):
        with pytest.raises(KeyError_):
            KS.parse(key)


def test_release_round_trip_normalises_url() -> None:
    r = release()
    assert r.base_url == "http://127.0.0.1:9900/v1"
    assert Release.decode(r.encode()) == r


def test_route_round_trip() -> None:
    route = Route(agent="support", stable="r2", previous_stable="r1", aliases=("helper",))
    assert Route.decode(route.encode()) == route


def test_audit_round_trip() -> None:
    entry = AuditEntry(
        actor="token:ops",
        action="route.set_stable",
        target="routes/support",
        at=1.5,
        before={"stable": "r1"},
        after={"stable": "r2"},
    )
    assert AuditEntry.decode(entry.encode()) == entry


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("model", "has space", "invalid model"),
        ("base_url", "ftp://x", "invalid base URL"),
        ("base_url", "http://user:pw@host/v1", "credentials"),
        ("base_url", "http://host:99999/v1", "invalid base URL"),
        ("api_key_env", "lower", "environment variable"),
        ("provider", "other", "unsupported provider"),
    ],
)
def test_release_rejects_bad_fields(field: str, value: str, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        release(**{field: value})


def test_decoder_refuses_wrong_kind_version_and_garbage() -> None:
    data = release().encode()
    with pytest.raises(RecordError, match="kind"):
        Route.decode(data)
    newer = msgpack.packb({"_v": 99, "_k": "release"})
    with pytest.raises(RecordError, match="newer"):
        Release.decode(newer)
    with pytest.raises(RecordError, match="not a msgpack"):
        Release.decode(b"\xc1\xc1")
    with pytest.raises(RecordError, match="expected a map"):
        Release.decode(msgpack.packb([1, 2]))
    with pytest.raises(RecordError, match="must be a string"):
        Release.decode(encode_record("release", {"agent": 5}))


def test_decoder_ignores_unknown_fields_for_forward_compatibility() -> None:
    fields = decode_record(release().encode(), kind="release")
    fields["added_in_a_later_version"] = {"x": 1}
    r = Release.decode(encode_record("release", fields))
    assert r.name == "r1"


def test_decoder_limits_depth_and_size() -> None:
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(RecordError, match="deeper"):
        decode_record(msgpack.packb({"_v": 1, "_k": "x", "d": deep}), kind="x")
    with pytest.raises(RecordError, match="over the"):
        decode_record(b"\x00" * (MAX_RECORD_BYTES + 1), kind="x")
    with pytest.raises(RecordError, match="over the"):
        encode_record("x", {"blob": b"\x00" * MAX_RECORD_BYTES})
    with pytest.raises(RecordError, match="map key"):
        decode_record(msgpack.packb({"_v": 1, "_k": "x", "m": {1: 2}}), kind="x")
