"""Tier 3: tool contracts with the control plane down, and concurrent registrations.

- etcd stopped: ``contract register`` is refused with 503 ``store_unavailable`` and nothing is
  written; a running sidecar keeps enforcing its last-known contracts, and so does one restarted
  during the outage (from its saved snapshot).
- several operators registering the same tool at once: one version each, none lost or
  duplicated, one audit entry per version.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack, get_json, stable_is, start_stack, wait_for
from tests.servers.contract_stack import SEARCH_ARGS, SEARCH_V1, SEARCH_V2, backend_server

CONCURRENT: int = 5  # configsvc's CAS attempts: each writer can lose to every other at most once


def write(path: Path, schema: Any) -> str:
    path.write_text(json.dumps(schema))
    return str(path)


async def tool_call(url: str, arguments: Any) -> tuple[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/tools/search", json=arguments,
                             headers={"X-Holdfast-Session": "s1"}) as resp:  # fmt: skip
            assert resp.status == 200
            return resp.headers["X-Holdfast-Tool-Outcome"], await resp.json()


async def test_etcd_down_register_refused_and_sidecars_keep_enforcing(
    tmp_path: Path, fresh_etcd: EtcdNode, etcd_env: str
) -> None:
    stack = start_stack(tmp_path, etcd_env, [fresh_etcd.client_url])
    try:
        async with backend_server() as backend:
            args, v1 = (
                write(tmp_path / "a.json", SEARCH_ARGS),
                write(tmp_path / "v1.json", SEARCH_V1),
            )
            stack.ctl("contract", "register", "search", "--args", args, "--result", v1,
                      "--backend", backend.url)  # fmt: skip
            stack.ctl("release", "create", AGENT, "c1", "--model", "model-one", "--base-url",
                      f"{stack.fake.url}/v1", "--contract", "search=1.0.0")  # fmt: skip
            stack.ctl("route", "set-stable", AGENT, "c1")
            state = tmp_path / "sidecar-state"
            sidecar = stack.start_sidecar([fresh_etcd.client_url], state_dir=state)
            await wait_for(f"{sidecar.url}/status", stable_is("c1"))
            assert (await tool_call(sidecar.url, {"query": "q"}))[0] == "ok"

            fresh_etcd.stop()
            v2 = write(tmp_path / "v2.json", SEARCH_V2)
            refused = stack.ctl("--json", "contract", "register", "search", "--args", args,
                                "--result", v2, "--backend", backend.url, check=False)  # fmt: skip
            assert refused.returncode != 0
            assert "store_unavailable" in refused.stderr + refused.stdout, refused.stderr

            async def still_enforcing(url: str) -> None:
                outcome, result = await tool_call(url, {"query": ""})  # minLength 1
                assert outcome == "invalid_args" and result["isError"] is True
                outcome, result = await tool_call(url, {"query": "q"})
                assert outcome == "ok" and result["structuredContent"]["hits"]
                _, status = await get_json(f"{url}/status")
                assert status["contracts"]["releases"]["c1"]["tools"]["search"]["held"] is True

            await still_enforcing(sidecar.url)
            calls_before = backend.calls
            sidecar.stop()  # a restart during the outage: the saved snapshot has the contracts
            sidecar = stack.start_sidecar([fresh_etcd.client_url], state_dir=state)
            await wait_for(f"{sidecar.url}/status", stable_is("c1"))
            await still_enforcing(sidecar.url)
            assert backend.calls == calls_before + 1  # invalid arguments never reach it

            fresh_etcd.start()  # back: nothing of the refused registration was written
            listed = json.loads(stack.ctl("--json", "contract", "list", "search").stdout)
            assert [v["version"] for v in listed["versions"]] == ["1.0.0"]
            history = json.loads(stack.ctl("--json", "history", "--limit", "200").stdout)
            registers = [e for e in history["entries"] if e["action"] == "contract.register"]
            assert len(registers) == 1
    finally:
        stack.stop()


def test_concurrent_registrations_take_one_version_each(stack: Stack, tmp_path: Path) -> None:
    v1 = write(tmp_path / "v1.json", SEARCH_V1)
    stack.ctl("contract", "register", "search", "--args",
              write(tmp_path / "a0.json", SEARCH_ARGS), "--result", v1)  # fmt: skip

    def register(i: int) -> dict[str, Any]:
        # Each operator adds a different optional argument: every one is a real change.
        props = {**SEARCH_ARGS["properties"], f"opt{i}": {"type": "string"}}
        args = write(tmp_path / f"a{i + 1}.json", {**SEARCH_ARGS, "properties": props})
        out = stack.ctl("--json", "contract", "register", "search", "--args", args,
                        "--result", v1, "--reason", f"op{i}")  # fmt: skip
        return dict(json.loads(out.stdout))

    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(register, range(CONCURRENT)))
    versions = [r["contract"]["version"] for r in results]
    assert all(r["created"] for r in results)
    assert len(set(versions)) == CONCURRENT, versions  # none duplicated
    listed = json.loads(stack.ctl("--json", "contract", "list", "search").stdout)
    stored = [v["version"] for v in listed["versions"]]
    assert stored == ["1.0.0", *sorted(versions, key=lambda v: tuple(map(int, v.split("."))))]
    # Each version's predecessor is the one before it: a chain, no fork, nothing lost.
    assert [v["previous"] for v in listed["versions"]] == ["", *stored[:-1]]
    history = json.loads(stack.ctl("--json", "history", "--limit", "200").stdout)
    audited = [e for e in history["entries"] if e["action"] == "contract.register"]
    targets = sorted(e["target"].rsplit("/", 1)[-1] for e in audited)
    assert targets == sorted(stored)
    reasons = sorted(e["reason"] for e in audited if e["reason"])
    assert reasons == sorted(f"op{i}" for i in range(CONCURRENT))
