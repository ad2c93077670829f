"""OFREP served by a real in-process sidecar: evaluation, bulk with ETag, STALE, bad requests,
routing by flag, and a real OpenFeature SDK client."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from holdfast.flags.definition import parse_file
from holdfast.keyspace import Keyspace, Route
from holdfast.keyspace.flag import FlagRecord
from tests.servers.conftest import AGENT, SidecarUnderTest

KS = Keyspace()
FILE = {
    "flags": {
        "new-prompt": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"if": [{"==": [{"var": "tenant"}, "acme"]}, "on", None]},
        },
        "model-route": {
            "state": "ENABLED",
            "variants": {"new": "r2", "old": "r1"},
            "defaultVariant": "old",
            "targeting": {"if": [{"==": [{"var": "tenant"}, "acme"]}, "new", None]},
        },
        "split": {
            "state": "ENABLED",
            "variants": {"a": "A", "b": "B"},
            "defaultVariant": "a",
            "targeting": {"fractional": [["a", 50], ["b", 50]]},
        },
    }
}


def put_flags(sut: SidecarUnderTest, document: dict[str, Any] = FILE) -> None:
    specs, _ = parse_file(document)
    for spec in specs:
        sut._put(KS.flag(spec.key), FlagRecord(spec=spec).encode())


async def post(url: str, body: Any = None, raw: bytes | None = None, **headers: str) -> Any:
    async with aiohttp.ClientSession() as http:
        data = raw if raw is not None else None
        async with http.post(
            url, json=body if raw is None else None, data=data, headers=headers
        ) as r:
            text = await r.text()
            return r.status, (await r.json() if text else None), r.headers


async def test_single_and_bulk_evaluation(sidecar: SidecarUnderTest) -> None:
    put_flags(sidecar)
    base = f"{sidecar.url}/ofrep/v1/evaluate/flags"
    status, body, _ = await post(f"{base}/new-prompt", {"context": {"tenant": "acme"}})
    assert status == 200
    assert body == {
        "key": "new-prompt",
        "value": True,
        "variant": "on",
        "reason": "TARGETING_MATCH",
        "metadata": {},
    }
    status, body, _ = await post(f"{base}/new-prompt", {"context": {"tenant": "other"}})
    assert (body["value"], body["reason"]) == (False, "DEFAULT")
    status, body, _ = await post(f"{base}/split", {"context": {"targetingKey": "user-1"}})
    assert body["reason"] == "SPLIT"
    status, body, headers = await post(base, {"context": {"targetingKey": "u", "tenant": "acme"}})
    assert status == 200 and [f["key"] for f in body["flags"]] == [
        "model-route",
        "new-prompt",
        "split",
    ]
    etag = headers["ETag"]
    status, _, _ = await post(
        base, {"context": {"targetingKey": "u", "tenant": "acme"}}, **{"If-None-Match": etag}
    )
    assert status == 304
    status, _, _ = await post(base, {"context": {"targetingKey": "u"}}, **{"If-None-Match": etag})
    assert status == 200  # another context, another answer


async def test_stale_reason_keeps_value(sidecar: SidecarUnderTest) -> None:
    put_flags(sidecar)
    sidecar.control.connected = False
    sidecar.control.last_contact = -1e9  # long ago on the monotonic clock
    status, body, _ = await post(
        f"{sidecar.url}/ofrep/v1/evaluate/flags/new-prompt", {"context": {"tenant": "acme"}}
    )
    assert (status, body["value"], body["variant"], body["reason"]) == (200, True, "on", "STALE")


@pytest.mark.parametrize(
    ("path", "raw", "status", "code"),
    [
        ("/new-prompt", b"{not json", 400, "PARSE_ERROR"),
        ("/new-prompt", b"[1, 2]", 400, "PARSE_ERROR"),
        ("/new-prompt", b'{"context": 5}', 400, "INVALID_CONTEXT"),
        ("/new-prompt", b'{"context": {"targetingKey": 7}}', 400, "INVALID_CONTEXT"),
        ("/new-prompt", b'{"context": {"a": "' + b"x" * 70_000 + b'"}}', 400, "INVALID_CONTEXT"),
        ("/missing", b"{}", 404, "FLAG_NOT_FOUND"),
        ("/bad%20key", b"{}", 404, "FLAG_NOT_FOUND"),
        ("", b'{"context": []}', 400, "INVALID_CONTEXT"),
    ],
)
async def test_bad_requests(
    sidecar: SidecarUnderTest, path: str, raw: bytes, status: int, code: str
) -> None:
    put_flags(sidecar)
    got, body, _ = await post(f"{sidecar.url}/ofrep/v1/evaluate/flags{path}", raw=raw)
    assert (got, body["errorCode"]) == (status, code)
    assert body["errorDetails"]


async def test_rule_failing_at_run_time_is_400_general(sidecar: SidecarUnderTest) -> None:
    """OFREP: an evaluation failure is 400 with errorCode GENERAL, in bulk one failed item."""
    ratio = {"/": [100, {"var": "seats"}]}
    put_flags(sidecar, {"flags": {"per-seat": {
        "state": "ENABLED", "variants": {"big": "big", "small": "small"}, "defaultVariant": "small",
        "targeting": {"if": [{">": [ratio, 10]}, "big", "small"]}}}})  # fmt: skip
    base = f"{sidecar.url}/ofrep/v1/evaluate/flags"
    status, body, _ = await post(f"{base}/per-seat", {"context": {"seats": 5}})
    assert (status, body["variant"]) == (200, "big")
    status, body, _ = await post(f"{base}/per-seat", {"context": {"seats": 0}})
    assert (status, body["key"], body["errorCode"]) == (400, "per-seat", "GENERAL")
    assert "ZeroDivisionError" in body["errorDetails"]
    status, body, _ = await post(base, {"context": {"seats": 0}})
    assert status == 200
    assert body["flags"] == [{"key": "per-seat", "errorCode": "GENERAL",
                              "errorDetails": body["flags"][0]["errorDetails"]}]  # fmt: skip
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecar.url}/metrics") as r:
            text = await r.text()
    assert 'holdfast_flag_evaluations_total{flag="per-seat",reason="GENERAL"} 2.0' in text
    assert 'holdfast_ofrep_requests_total{endpoint="single",status="400"} 1.0' in text


async def test_poison_record_keeps_previous(sidecar: SidecarUnderTest) -> None:
    put_flags(sidecar)
    sidecar._put(KS.flag("new-prompt"), b"\x93garbage")
    status, body, _ = await post(
        f"{sidecar.url}/ofrep/v1/evaluate/flags/new-prompt", {"context": {"tenant": "acme"}}
    )
    assert (status, body["value"]) == (200, True)
    assert any(r.key.endswith("flags/new-prompt") for r in sidecar.config.rejections)


async def test_route_flag_steers_new_sessions_only(sidecar: SidecarUnderTest) -> None:
    put_flags(sidecar)
    chat = {"model": AGENT, "messages": [{"role": "user", "content": "hi"}]}

    async def served(session: str, tenant: str) -> str:
        headers = {"X-Holdfast-Session": session, "X-Holdfast-Tenant": tenant}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{sidecar.url}/v1/chat/completions", json=chat, headers=headers
            ) as r:
                assert r.status == 200, await r.text()
                return r.headers["X-Holdfast-Release"]

    assert await served("s-before", "acme") == "r1"  # pinned before the route names the flag
    sidecar._put(KS.route(AGENT), Route(agent=AGENT, stable="r1", flag="model-route").encode())
    assert await served("s-acme", "acme") == "r2"
    assert await served("s-other", "globex") == "r1"
    assert await served("s-before", "acme") == "r1"  # the pin wins


async def test_openfeature_sdk_against_the_sidecar(sidecar: SidecarUnderTest) -> None:
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider
    from openfeature.evaluation_context import EvaluationContext

    put_flags(sidecar)
    api.set_provider(OFREPProvider(sidecar.url))
    client = api.get_client()

    def ask() -> tuple[Any, ...]:
        acme = EvaluationContext(targeting_key="user-1", attributes={"tenant": "acme"})
        details = client.get_boolean_details("new-prompt", False, acme)
        missing = client.get_string_details("nope", "fallback", acme)
        return (
            details.value,
            details.variant,
            str(details.reason),
            missing.value,
            str(missing.error_code),
        )

    value, variant, reason, missing, code = await asyncio.to_thread(ask)
    assert (value, variant, missing) == (True, "on", "fallback")
    assert "TARGETING_MATCH" in reason and "FLAG_NOT_FOUND" in code


CODE_DEFAULT = {
    "flags": {
        "no-default": {"state": "ENABLED", "variants": {"on": True, "off": False}},
        "no-default-rule": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": None,
            "targeting": {"if": [{"==": [{"var": "tenant"}, "acme"]}, "on", None]},
        },
        "no-default-killed": {
            "state": "DISABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": None,
        },
    }
}


async def test_code_default_is_a_success_without_value(sidecar: SidecarUnderTest) -> None:
    """flagd's answer for a flag with no default variant: 200, reason DEFAULT (DISABLED when
    killed), no ``value``; ``variant`` is the empty string, a name no variant can have."""
    put_flags(sidecar, CODE_DEFAULT)
    base = f"{sidecar.url}/ofrep/v1/evaluate/flags"
    expected = {
        "no-default": "DEFAULT",
        "no-default-rule": "DEFAULT",
        "no-default-killed": "DISABLED",
    }
    for key, reason in expected.items():
        status, body, _ = await post(f"{base}/{key}", {"context": {"tenant": "globex"}})
        assert (status, body) == (200, {"key": key, "reason": reason, "variant": "",
                                        "metadata": {}})  # fmt: skip
    status, body, _ = await post(f"{base}/no-default-rule", {"context": {"tenant": "acme"}})
    assert (status, body["value"], body["variant"]) == (200, True, "on")  # a rule still matches
    status, body, _ = await post(base, {"context": {}})
    assert status == 200
    assert {f["key"]: "value" in f for f in body["flags"]} == dict.fromkeys(expected, False)


async def test_openfeature_sdk_gets_the_code_default_cleanly(
    sidecar: SidecarUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.flag_evaluation import FlagEvaluationDetails, Reason

    put_flags(sidecar, CODE_DEFAULT)
    api.set_provider(OFREPProvider(sidecar.url))
    client = api.get_client()

    def ask() -> dict[str, FlagEvaluationDetails[Any]]:
        ctx = EvaluationContext(targeting_key="user-1", attributes={"tenant": "globex"})
        acme = EvaluationContext(targeting_key="user-1", attributes={"tenant": "acme"})
        return {
            "bool": client.get_boolean_details("no-default", True, ctx),
            "string": client.get_string_details("no-default-rule", "code", ctx),
            "object": client.get_object_details("no-default-killed", {"code": 1}, ctx),
            "match": client.get_boolean_details("no-default-rule", False, acme),
        }

    with caplog.at_level(logging.DEBUG, logger="openfeature"):
        got = await asyncio.to_thread(ask)
    summary = {name: (d.value, d.reason, d.error_code, d.error_message) for name, d in got.items()}
    assert summary == {
        "bool": (True, Reason.DEFAULT, None, None),
        "string": ("code", Reason.DEFAULT, None, None),
        "object": ({"code": 1}, Reason.DISABLED, None, None),
        "match": (True, Reason.TARGETING_MATCH, None, None),
    }
    assert got["match"].variant == "on"
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]
