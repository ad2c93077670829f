"""Flags end to end: holdfastctl apply/get/list/history/kill/enable against real configsvc and
etcd, a real sidecar process serving OFREP, stickiness across restarts, STALE with etcd down."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from holdfast.devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, start_stack

FLAGS: dict[str, Any] = {
    "$evaluators": {"is_acme": {"==": [{"var": "tenant"}, "acme"]}},
    "flags": {
        "newPrompt": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"if": [{"$ref": "is_acme"}, "on", None]},
        },
        "split": {
            "state": "ENABLED",
            "variants": {"a": "A", "b": "B", "c": "C"},
            "defaultVariant": "a",
            "targeting": {"fractional": [["a", 34], ["b", 33], ["c", 33]]},
        },
    },
}
USERS = [f"user-{i}" for i in range(40)]


async def evaluate(url: str, key: str, context: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/ofrep/v1/evaluate/flags/{key}", json={"context": context}
        ) as resp:
            body: dict[str, Any] = await resp.json()
            return body


async def until(
    url: str, key: str, context: dict[str, Any], check: Any, timeout: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = await evaluate(url, key, context)
            if check(last):
                return last
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out; last answer {last}")


async def splits(url: str) -> list[str]:
    return [(await evaluate(url, "split", {"targetingKey": u}))["variant"] for u in USERS]


async def test_flags_lifecycle(tmp_path: Path, fresh_etcd: EtcdNode, etcd_env: str) -> None:
    stack = start_stack(tmp_path, etcd_env, [fresh_etcd.client_url])
    try:
        stack.create_releases(("r1", "model-one"))
        stack.ctl("route", "set-stable", AGENT, "r1")
        bad = tmp_path / "bad.json"
        bad.write_text(
            json.dumps(
                {
                    "flags": {
                        **FLAGS["flags"],
                        "x": {"variants": {"a": 1}, "targeting": {"$ref": "nope"}},
                    }
                }
            )
        )
        refused = stack.ctl("flag", "apply", str(bad), check=False)
        assert refused.returncode != 0 and "unknown $ref" in refused.stderr
        assert "no flags defined" in stack.ctl("flag", "list").stdout  # nothing was written
        good = tmp_path / "flags.json"
        good.write_text(json.dumps(FLAGS))
        assert (
            "applied 2 flag(s)"
            in stack.ctl("flag", "apply", str(good), "--reason", "launch").stdout
        )
        assert "nothing changed" in stack.ctl("flag", "apply", str(good)).stdout
        listing = json.loads(stack.ctl("flag", "list", "--json").stdout)
        assert sorted(f["key"] for f in listing["flags"]) == ["newPrompt", "split"]

        sidecar = stack.start_sidecar([fresh_etcd.client_url], name="a")
        acme = {"targetingKey": "u1", "tenant": "acme"}
        await until(sidecar.url, "newPrompt", acme, lambda b: b.get("value") is True)
        before = await splits(sidecar.url)
        assert len(set(before)) == 3

        stack.ctl("flag", "kill", "newPrompt", "--reason", "incident")
        body = await until(sidecar.url, "newPrompt", acme, lambda b: b.get("reason") == "DISABLED")
        assert body["value"] is False
        history = stack.ctl("flag", "history", "newPrompt").stdout
        assert "flag.kill" in history and "flag.apply" in history
        stack.ctl("flag", "enable", "newPrompt")
        await until(sidecar.url, "newPrompt", acme, lambda b: b.get("reason") == "TARGETING_MATCH")

        sidecar.stop()  # stickiness across restarts: same users, same variants
        sidecar = stack.start_sidecar([fresh_etcd.client_url], name="a")
        await until(sidecar.url, "split", {"targetingKey": "u"}, lambda b: "variant" in b)
        assert await splits(sidecar.url) == before

        fresh_etcd.stop()  # control plane down: last-known values, reason STALE
        body = await until(sidecar.url, "newPrompt", acme, lambda b: b.get("reason") == "STALE")
        assert (body["value"], body["variant"]) == (True, "on")
        assert await splits(sidecar.url) == before
    finally:
        stack.stop()
