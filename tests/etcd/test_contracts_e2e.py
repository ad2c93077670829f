"""Tier 3: contracts through holdfastctl, configsvc and etcd, then enforced by a real sidecar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from holdfast.contracts.schema import MAX_SCHEMA_BYTES, canonical
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack, stable_is, wait_for
from tests.servers.contract_stack import SEARCH_ARGS, SEARCH_V1, SEARCH_V2, backend_server


def write(path: Path, schema: Any) -> str:
    path.write_text(json.dumps(schema))
    return str(path)


def ctl_json(stack: Stack, *args: str) -> Any:
    return json.loads(stack.ctl("--json", *args).stdout)


async def test_register_classify_pin_and_call_through_a_real_sidecar(
    stack: Stack, etcd_node: EtcdNode, tmp_path: Path
) -> None:
    args = write(tmp_path / "args.json", SEARCH_ARGS)
    v1 = write(tmp_path / "v1.json", SEARCH_V1)
    v2 = write(tmp_path / "v2.json", SEARCH_V2)
    async with backend_server() as backend:
        reg = ["contract", "register", "search", "--args", args, "--backend", backend.url]
        first = ctl_json(stack, *reg, "--result", v1)
        assert (first["created"], first["contract"]["version"], first["compat"]) == (
            True, "1.0.0", "initial")  # fmt: skip
        again = stack.ctl(*reg, "--result", v1)
        assert "unchanged, content identical to 1.0.0" in again.stdout
        wider = dict(
            SEARCH_ARGS, properties={**SEARCH_ARGS["properties"], "lang": {"type": "string"}}
        )
        minor = ctl_json(stack, *reg[:4], write(tmp_path / "a2.json", wider), "--backend",
                         backend.url, "--result", v1)  # fmt: skip
        assert (minor["contract"]["version"], minor["compat"]) == ("1.1.0", "compatible")
        major = stack.ctl(*reg[:4], write(tmp_path / "a2.json", wider), "--backend", backend.url,
                          "--result", v2)  # fmt: skip
        assert "registered search 2.0.0 (breaking vs 1.1.0)" in major.stdout
        diff = stack.ctl("contract", "diff", "search", "1.0.0", "2.0.0").stdout
        lines = {tuple(line.split()[:3]) for line in diff.splitlines()}
        assert ("breaking", "result.hits", "removed") in lines
        assert ("compatible", "args.lang", "added") in lines
        listed = stack.ctl("contract", "list", "search").stdout.splitlines()
        assert [line.split()[:3] for line in listed[2:]] == [
            ["1.0.0", "initial", "-"], ["1.1.0", "compatible", "1.0.0"],
            ["2.0.0", "breaking", "1.1.0"]]  # fmt: skip
        assert stack.ctl("contract", "list").stdout.splitlines()[1].split()[:3] == [
            "search",
            "2.0.0",
            "3",
        ]

        # schemas at their size limit, non-ASCII: the request is far over the API's general
        # 64 KiB once escaped, within the registration route's own limit
        wide = {"type": "object", "description": "é" * 14_000}
        assert 27_000 < len(canonical(wide)) <= MAX_SCHEMA_BYTES
        docs = ctl_json(stack, "contract", "register", "docs", "--args",
                        write(tmp_path / "wa.json", wide), "--result",
                        write(tmp_path / "wr.json", wide))  # fmt: skip
        assert docs["created"] and docs["contract"]["args_schema"] == wide
        over = {"type": "object", "description": "é" * 15_000}
        refused = stack.ctl("--json", "contract", "register", "docs", "--args",
                            write(tmp_path / "wo.json", over), "--result",
                            write(tmp_path / "wr.json", wide), check=False)  # fmt: skip
        assert refused.returncode == 1 and f"the limit is {MAX_SCHEMA_BYTES}" in refused.stdout

        bad = write(tmp_path / "bad.json", {"$ref": "https://evil.example/s.json"})
        refused = stack.ctl("contract", "register", "search", "--args", bad, "--result", v1,
                            check=False)  # fmt: skip
        assert refused.returncode == 1 and "remote $ref" in refused.stderr
        unknown = stack.ctl("release", "create", AGENT, "r9", "--model", "m", "--base-url",
                            f"{stack.fake.url}/v1", "--contract", "search=7.0.0",
                            check=False)  # fmt: skip
        assert unknown.returncode == 1 and "no contract version '7.0.0'" in unknown.stderr
        for name, version in (("c1", "1.0.0"), ("c2", "2.0.0")):
            stack.ctl("release", "create", AGENT, name, "--model", "model-one", "--base-url",
                      f"{stack.fake.url}/v1", "--api-key-env", "E2E_PROVIDER_KEY",
                      "--contract", f"search={version}")  # fmt: skip
        assert ctl_json(stack, "release", "show", AGENT, "c2")["release"]["contracts"] == {
            "search": "2.0.0"
        }
        stack.ctl("route", "set-stable", AGENT, "c1")
        sidecar = stack.start_sidecar([etcd_node.client_url])
        await wait_for(f"{sidecar.url}/status", stable_is("c1"))

        async def call(session: str) -> tuple[str, dict[str, Any]]:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{sidecar.url}/tools/search", json={"query": "q"},
                                     headers={"X-Holdfast-Session": session}) as resp:  # fmt: skip
                    assert resp.status == 200
                    return resp.headers["X-Holdfast-Release"], await resp.json()

        assert (await call("old"))[1]["isError"] is False
        backend.shape = "v2"  # the backend ships its breaking change before anyone pinned it
        release, result = await call("old")
        assert release == "c1" and result["isError"] is True
        stack.ctl("route", "set-stable", AGENT, "c2")
        await wait_for(f"{sidecar.url}/status", stable_is("c2"))
        release, result = await call("new")
        assert release == "c2" and result["structuredContent"] == {"results": ["Holdfast"]}
        release, result = await call("old")  # still pinned to c1: degraded, not broken
        assert release == "c1" and result["isError"] is True
